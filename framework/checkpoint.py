"""Rebuild a trained model from a Lightning checkpoint written by ``archlab train``."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config_schema import ConfigError
from .plugin import Plugin
from .registry import get_plugin, list_plugins, make_config


def read_checkpoint(path: str | Path, field: str = "ckpt", map_location: str = "cpu", mmap: bool = False) -> dict:
    """A checkpoint written by ``archlab train``, loaded with ``weights_only=True`` (no pickled code runs); a missing,
    corrupt, truncated or foreign file is one ConfigError naming ``field``, the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{field}: no checkpoint file at {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; torch's own error would talk of pickles
        raise ConfigError(f"{field}: {path} is not a checkpoint (not a torch.save archive: truncated, corrupt or "
                          "another kind of file)")
    try:
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except Exception as err:  # noqa: BLE001
            if "torchao" not in str(err):
                raise
            # A quantized checkpoint: torchao's tensor types become safe to load once torchao is imported.
            from .quantization.torchao_backend import torchao

            torchao()
            ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a bad file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{field}: {path} is not a readable checkpoint (truncated, corrupt or not a torch file: "
                          f"{reason[:200]})") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or "plugin_name" not in hparams or "model_config" not in hparams:
        raise ConfigError(f"{field}: {path} was not written by archlab train (no plugin_name/model_config)")
    return ckpt


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Return (model in eval mode, hyper-parameters). Loads with ``weights_only=True`` (no pickled code).

    A quantized checkpoint (``archlab quantize``, or the end of quantization-aware training) is rebuilt with its
    quantized structure; its hyper-parameters then carry ``quantization`` (the config) as well."""
    ckpt = read_checkpoint(path, map_location=map_location)
    hparams = ckpt["hyper_parameters"]
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    plugin, config, state = _upgraded(hparams["plugin_name"], hparams["model_config"], state)
    hparams = {**hparams, "plugin_name": plugin.name, "model_config": config}
    model = plugin.build(make_config(plugin.name, **config))
    if "archlab_quantization" in ckpt:  # imported here: torchao loads only for quantized checkpoints
        from .quantization.checkpoint import load_quantized_state, quantization_of

        quantization = quantization_of(ckpt)
        load_quantized_state(model, quantization, state)
        hparams["quantization"] = quantization.to_dict()
    else:
        model.load_state_dict(state)
    return model.eval(), hparams


def _upgraded(name: str, config: dict, state: dict) -> tuple[Plugin, dict, dict]:
    """The plugin that loads checkpoints of ``name``: itself, or one declaring an upgrade from that retired name."""
    for plugin in list_plugins().values():
        if name != plugin.name and name in plugin.upgrades:
            config, state = plugin.upgrades[name](name, config, state)
            return plugin, config, state
    return get_plugin(name), config, state
