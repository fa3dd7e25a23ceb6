"""Rebuild a trained model from a Lightning checkpoint written by ``archlab train``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config_schema import ConfigError
from .plugin import Plugin
from .registry import get_plugin, list_plugins, make_config


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Return (model in eval mode, hyper-parameters). Loads with ``weights_only=True`` (no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt: no checkpoint file at {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    hparams = ckpt.get("hyper_parameters", {})
    if "plugin_name" not in hparams or "model_config" not in hparams:
        raise ConfigError(f"ckpt: {path} was not written by archlab train (no plugin_name/model_config)")
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    plugin, config, state = _upgraded(hparams["plugin_name"], hparams["model_config"], state)
    hparams = {**hparams, "plugin_name": plugin.name, "model_config": config}
    model = plugin.build(make_config(plugin.name, **config))
    model.load_state_dict(state)
    return model.eval(), hparams


def _upgraded(name: str, config: dict, state: dict) -> tuple[Plugin, dict, dict]:
    """The plugin that loads checkpoints of ``name``: itself, or one declaring an upgrade from that retired name."""
    for plugin in list_plugins().values():
        if name != plugin.name and name in plugin.upgrades:
            config, state = plugin.upgrades[name](name, config, state)
            return plugin, config, state
    return get_plugin(name), config, state
