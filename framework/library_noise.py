"""Start-up lines of the libraries that say nothing about the user's run, silenced one by one, in one place.

Each is matched by its own message (and the module or logger that emits it), never by a whole category or
logger, so a new warning still shows. Kept, because they are about the run: "Seed set to N", "GPU available: ...,
used: ...", CUDA's "LOCAL_RANK ... CUDA_VISIBLE_DEVICES" and its tensor-core hint (``set_float32_matmul_precision``:
a real speed setting of fp32 matmuls), "`Trainer.fit` stopped: `max_steps=N` reached", and W&B's lines saying where
the run is saved and how to sync it. torchao's import-time notices are silenced where it is imported
(``framework/quantization/torchao_backend.py``), since only quantization imports it.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

from lightning.fabric.utilities.warnings import PossibleUserWarning

# Lightning's rank_zero_info / rank_zero_warn log through whichever of these its utilities module was pointed at
# last; a logger's filter sees only the records logged on it (not its children's), so both carry the filter.
LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")

# Beginnings of Lightning INFO lines that are not about the run.
LOG_LINES = (
    "💡 Tip: For seamless cloud logging",  # an advertisement for Lightning's hosted logger (litlogger)
    "TPU available: False",  # no TPU here, and none was asked for (the GPU line, which says what runs, stays)
)

# (message regex, category, module regex) of warnings that are not about the run.
WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # Lightning's own use of a torch pytree API that torch deprecated: nothing the user wrote or can change.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch\.utilities\._pytree"),
    # Lightning's guess from the CPU count: archlab's batches are rows sliced from token tensors already in memory,
    # so worker processes would only add start-up time (data.num_workers stays available).
    (r"The '\w+' does not have many workers", PossibleUserWarning, r""),
)


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LOG_LINES)


_DROP_LINES = _DropLines()  # one instance: adding it again is a no-op (Logger.addFilter skips a filter it holds)


def quiet_library_noise() -> None:
    """Install the filters above (idempotent). Warning filters are process state: call it where a run starts."""
    for name in LIGHTNING_INFO_LOGGERS:
        logging.getLogger(name).addFilter(_DROP_LINES)
    for message, category, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def quiet_wandb_logger(logger: Any) -> None:
    """Lightning's WandbLogger always passes ``anonymous=None`` to ``wandb.init``, which wandb answers on every run
    with "The anonymous setting has no effect and will be removed": leave the unset value out instead."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
