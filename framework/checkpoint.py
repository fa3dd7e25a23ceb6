"""Rebuild a trained model from a Lightning checkpoint written by ``archlab train``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config_schema import ConfigError
from .registry import get_plugin, make_config


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Return (model in eval mode, hyper-parameters). Loads with ``weights_only=True`` (no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt: no checkpoint file at {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    hparams = ckpt.get("hyper_parameters", {})
    if "plugin_name" not in hparams or "model_config" not in hparams:
        raise ConfigError(f"ckpt: {path} was not written by archlab train (no plugin_name/model_config)")
    plugin = get_plugin(hparams["plugin_name"])
    model = plugin.build(make_config(plugin.name, **hparams["model_config"]))
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval(), hparams
