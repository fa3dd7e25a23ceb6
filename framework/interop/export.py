"""``archlab export``: a checkpoint as a Hugging Face folder (``format=hf``: ``config.json`` + ``model.safetensors``,
loadable with ``transformers``' Auto classes) or as a bare safetensors state dict (``format=safetensors``)."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from framework.config_schema import ConfigError
from framework.data.tokenizer import save_hf_files
from framework.registry import get_plugin, make_config

from .hf_models import architecture_for, check_same_function, load_exactly, require_transformers

FORMATS = ("hf", "safetensors")


@dataclass
class Exported:
    path: Path
    format: str
    model_type: str | None = None  # format=hf: the Hugging Face architecture written
    auto_class: str | None = None
    probe_difference: float | None = None  # max relative logit difference, HF model vs ours, on a probe batch


def _fresh(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise ConfigError(f"out: {out} already exists; pass overwrite=true to replace it, or another out=")


def _replace(tmp: Path, out: Path) -> None:
    """Put the finished ``tmp`` where ``out`` is: nothing half-written is ever at ``out``."""
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    os.replace(tmp, out)


def export_hf(model: nn.Module, hparams: dict[str, Any], out: Path, overwrite: bool = False,
              tokenizer: Any = None) -> Exported:
    """Write ``model`` (of ``hparams``' plugin and config) as a Hugging Face folder at ``out``, with ``tokenizer``'s
    files (``tokenizer.json``: bytes as their exact byte-level BPE equivalent) for ``AutoTokenizer``."""
    transformers = require_transformers("format=hf")
    _fresh(out, overwrite)
    plugin = get_plugin(hparams["plugin_name"])
    config = make_config(plugin.name, **hparams["model_config"])
    arch, hf_config = architecture_for(plugin, config)
    hf_model = getattr(transformers, arch.auto_class).from_config(hf_config).float()
    ours = {k: v.detach().float() for k, v in model.state_dict().items()}
    load_exactly(hf_model, arch.to_hf_state(ours, config, hf_model.state_dict()), f"format=hf ({arch.model_type})")
    pad = getattr(config, "pad_token_id", None)
    difference = check_same_function(model.float(), hf_model, plugin.objective, config.vocab_size,
                                     getattr(config, "max_seq_len", 16), f"format=hf ({arch.model_type})", pad)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    hf_model.save_pretrained(tmp)  # safetensors; drops tied copies, as transformers expects them
    if tokenizer is not None:
        save_hf_files(tokenizer, tmp)
    (tmp / "archlab.json").write_text(json.dumps(
        {"plugin_name": plugin.name, "model_config": hparams["model_config"], "model_type": arch.model_type},
        indent=2, default=str))
    _replace(tmp, out)
    return Exported(out, "hf", arch.model_type, arch.auto_class, difference)


def export_safetensors(model: nn.Module, hparams: dict[str, Any], out: Path, overwrite: bool = False) -> Exported:
    """The bare state dict as one ``.safetensors`` file; tied tensors are stored once (the metadata names the
    aliases) and the metadata holds the plugin and model config, so the file says what it is."""
    from safetensors.torch import save_file

    _fresh(out, overwrite)
    state, aliases, seen = {}, {}, {}
    for key, value in model.state_dict().items():
        ptr = (value.data_ptr(), tuple(value.shape))
        if ptr in seen:
            aliases[key] = seen[ptr]
            continue
        seen[ptr] = key
        state[key] = value.detach().contiguous().clone()
    metadata = {"format": "pt", "archlab.plugin_name": hparams["plugin_name"],
                "archlab.model_config": json.dumps(hparams["model_config"], default=str),
                "archlab.tied": json.dumps(aliases)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    _replace(tmp, out)
    return Exported(out, "safetensors")


def load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict of an ``export format=safetensors`` file (aliases restored) and its metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    for alias, key in json.loads(metadata.get("archlab.tied", "{}")).items():
        state[alias] = state[key]
    return state, metadata


def config_dict(config: Any) -> dict[str, Any]:
    """A plugin config as plain values (what checkpoints record as ``model_config``)."""
    return asdict(config)
