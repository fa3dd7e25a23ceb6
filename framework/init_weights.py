"""``train ckpt_path=<weights-only checkpoint>``: a new run that starts from a checkpoint's weights (``archlab import``
writes such checkpoints: weights and model config, no optimizer or loop state). A trainer checkpoint (``last.ckpt``)
still resumes the run it belongs to.

The model is the checkpoint's (its plugin and config); ``model.<field>=...`` given on the command line still apply
(e.g. ``model.dropout=0.1`` for fine-tuning), and the weights must fit the result.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .checkpoint import read_checkpoint
from .config_schema import ConfigError

log = logging.getLogger("archlab")


def weights_only_checkpoint(cfg: DictConfig) -> dict[str, Any] | None:
    """The checkpoint at ``cfg.ckpt_path`` when it holds weights only (no trainer state), else None."""
    path = cfg.get("ckpt_path")
    if not path or not Path(path).is_file():
        return None  # no file: the resume checks name the problem
    ckpt = read_checkpoint(path, "ckpt_path", mmap=True)
    if "loops" in ckpt or "optimizer_states" in ckpt:
        return None
    if "archlab_quantization" in ckpt:
        raise ConfigError(f"ckpt_path: {path} is a quantized checkpoint; fine-tune from full-precision weights")
    return ckpt


def _command_line_model_overrides() -> list[str]:
    """The ``model.<path>`` keys set on this run's command line (none outside a Hydra app, e.g. in tests)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = HydraConfig.get().overrides.task
    except (ImportError, ValueError):
        return []
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    return [k.removeprefix("model.") for k in keys if k.startswith("model.") and k != "model.plugin"]


def initial_model_config(cfg: DictConfig, ckpt: dict[str, Any], explicit: list[str] | None = None) -> tuple[str, dict]:
    """(plugin name, model config): the checkpoint's, with the command line's ``model.<field>`` overrides."""
    hparams = ckpt["hyper_parameters"]
    base = OmegaConf.create(hparams["model_config"])
    for key in _command_line_model_overrides() if explicit is None else explicit:
        OmegaConf.update(base, key, OmegaConf.select(cfg.model, key), merge=False)
    log.info("ckpt_path %s holds weights only: a new run of its %s model from those weights", cfg.ckpt_path,
             hparams["plugin_name"])
    return hparams["plugin_name"], OmegaConf.to_container(base, resolve=True)


def load_initial_weights(model: torch.nn.Module, ckpt_path: str) -> None:
    ckpt = read_checkpoint(ckpt_path, "ckpt_path")
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"ckpt_path: the weights in {ckpt_path} do not fit this run's model (a model.<field> "
                          f"override changed a shape?): {str(err).splitlines()[0][:300]}") from None
