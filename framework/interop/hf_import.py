"""``archlab import``: a local Hugging Face folder (``config.json`` + safetensors weights; nothing is downloaded) as
an archlab checkpoint that ``generate``, ``eval`` and ``train ckpt_path=...`` (fine-tuning) load."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from framework.config_schema import ConfigError
from framework.plugin import Plugin
from framework.registry import list_plugins, make_config

from .architecture import HFArchitecture
from .hf_models import check_same_function, load_exactly, require_transformers

KEY = "archlab_import"  # in the checkpoint: where it came from


@dataclass
class Imported:
    model: torch.nn.Module
    hparams: dict[str, Any]
    model_type: str
    probe_difference: float


def architecture_of(model_type: str) -> tuple[Plugin, HFArchitecture]:
    """The installed plugin that maps Hugging Face's ``model_type``."""
    known = {}
    for plugin in list_plugins().values():
        for arch in plugin.hf_architectures:
            known.setdefault(arch.model_type, (plugin, arch))
    if model_type not in known:
        raise ConfigError(f"hf: model_type {model_type!r} has no archlab counterpart; importable: "
                          f"{', '.join(sorted(known))}")
    return known[model_type]


def import_hf(folder: Path, max_seq_len: int | None = None) -> Imported:
    """Read ``folder`` (fp32), map its config and weights, and check both models give the same logits."""
    transformers = require_transformers("hf")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"hf: {folder} holds no config.json (a Hugging Face model folder, e.g. written by "
                          "save_pretrained or archlab export format=hf)")
    hf_config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    plugin, arch = architecture_of(hf_config.model_type)
    try:
        values = arch.from_hf_config(hf_config, max_seq_len)
        config = make_config(plugin.name, **values)
    except ValueError as err:
        raise ConfigError(f"hf: {hf_config.model_type} config of {folder}: {err}") from None
    hf_model = getattr(transformers, arch.auto_class).from_pretrained(folder, local_files_only=True,
                                                                      dtype=torch.float32)
    hf_state = {k: v.detach() for k, v in hf_model.state_dict().items()}
    try:
        state = arch.from_hf_state(hf_state, hf_config, config)
    except (KeyError, ValueError) as err:
        raise ConfigError(f"hf: the weights of {folder} do not map to the {plugin.name} plugin: {err}") from None
    model = plugin.build(config)
    load_exactly(model, state, f"hf ({hf_config.model_type})")
    difference = check_same_function(model, hf_model, plugin.objective, config.vocab_size,
                                     getattr(config, "max_seq_len", 16), f"hf ({hf_config.model_type})",
                                     getattr(config, "pad_token_id", None))
    hparams = {"plugin_name": plugin.name, "model_config": asdict(config), "data_config": None}
    return Imported(model.eval(), hparams, hf_config.model_type, difference)


def save_imported(imported: Imported, out: Path, source: Path, overwrite: bool = False,
                  extra_hparams: dict[str, Any] | None = None) -> Path:
    """An archlab checkpoint (hyper-parameters + ``model.``-prefixed weights, no trainer state), written atomically."""
    if out.exists() and not overwrite:
        raise ConfigError(f"out: {out} already exists; pass overwrite=true to replace it, or another out=")
    payload = {
        "hyper_parameters": {**imported.hparams, **(extra_hparams or {})},
        "state_dict": {f"model.{k}": v.detach().clone() for k, v in imported.model.state_dict().items()},
        KEY: {"source": str(source), "model_type": imported.model_type,
              "probe_difference": imported.probe_difference},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, out)
    return out
