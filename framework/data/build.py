"""Build a datamodule from ``cfg.data`` so that config mistakes surface as DataConfigError."""
from __future__ import annotations

from typing import Any

import hydra
import lightning.pytorch as pl
from hydra.errors import InstantiationException

from .errors import DataConfigError


def build_datamodule(cfg: Any, objective: str | None = None) -> pl.LightningDataModule:
    """``hydra.utils.instantiate(cfg)``, re-raising our config errors without Hydra's wrapper.

    Hydra wraps every constructor error in ``InstantiationException``; unwrapping keeps the message
    ("data.seq_len=... is too large ...") as the whole, short error.
    """
    try:
        # The model's plugin decides the objective; the datamodule builds batches for it (or refuses).
        dm = hydra.utils.instantiate(cfg, **({"objective": objective} if objective else {}))
    except InstantiationException as e:
        if isinstance(e.__cause__, DataConfigError):
            raise DataConfigError(str(e.__cause__)) from None
        raise
    if objective and dm.objective != objective:
        raise DataConfigError(f"data: {type(dm).__name__} built '{dm.objective}' batches, the model needs '{objective}'")
    for attr in ("vocab_size", "seq_len", "objective", "decode", "encode"):
        if not hasattr(dm, attr):
            raise DataConfigError(f"data._target_ {cfg.get('_target_')!r} builds an object without `{attr}`")
    return dm
