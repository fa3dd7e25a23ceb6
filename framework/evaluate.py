"""Validation metrics of a model (full precision or quantized) on a data config: ``archlab eval`` and the
before/after columns of ``archlab quantize``."""
from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import lightning as L
import torch
from omegaconf import OmegaConf

from .config_schema import ConfigError
from .data.build import build_datamodule
from .data.tokenizer import check_checkpoint_tokenizer
from .lit_module import ArchitectureModule
from .library_noise import quiet_library_noise
from .registry import get_plugin


def checkpoint_data_config(hparams: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The data config a checkpoint was trained on, with ``overrides`` (``data.<field>=value``) applied."""
    data = hparams.get("data_config")
    if not data:
        raise ConfigError("data: this checkpoint does not record its data config (written before archlab recorded "
                          "it); pass the run's data as data=<option of conf/data> (and data.<field>=... overrides)")
    return {**data, **(overrides or {})}


def evaluate(model: torch.nn.Module, hparams: dict[str, Any], data_config: dict[str, Any],
             batches: int | None = None) -> dict[str, float]:
    """val loss (nats per scored token), perplexity, accuracy, bits per token and, for text data, bits per byte
    (``val/bpb``, as training logs it), on the validation split of ``data_config`` (``batches`` of it, or all).
    Data tokenized otherwise than the checkpoint's was is a ConfigError naming data.tokenizer."""
    plugin = get_plugin(hparams["plugin_name"])
    datamodule = build_datamodule(OmegaConf.create(data_config), objective=plugin.objective)
    check_checkpoint_tokenizer(hparams, datamodule, "the checkpoint")
    module = ArchitectureModule(hparams["plugin_name"], hparams["model_config"], attention_stats=False)
    module.model = model
    quiet = logging.getLogger("lightning.pytorch")
    level, quiet.level = quiet.level, logging.WARNING  # no "limit_val_batches was configured" banner
    try:
        with warnings.catch_warnings():
            quiet_library_noise()  # Lightning's own deprecation notices about torch's pytree (scoped to this call)
            trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                limit_val_batches=batches if batches else 1.0)
            metrics = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    finally:
        quiet.setLevel(level)
    loss = float(metrics["val/loss"])
    out = {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), "bits_per_token": loss / math.log(2)}
    if "val/acc" in metrics:
        out["val_acc"] = float(metrics["val/acc"])
    if "val/bpb" in metrics:
        out["bits_per_byte"] = float(metrics["val/bpb"])
    return out
