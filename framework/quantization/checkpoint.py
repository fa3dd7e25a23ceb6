"""Quantized checkpoints: an ``archlab train`` checkpoint's hyper-parameters, the quantized state dict, and what
was done (``archlab_quantization``: the config to rebuild the structure with, and the report).

They load with ``torch.load(weights_only=True)``: torchao registers its tensor subclasses (``Int8Tensor``,
``IntxUnpackedToInt8Tensor``, ``Int4OpaqueTensor``) as safe globals, so no pickled code runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from framework.config_schema import ConfigError

from .apply import QuantizationReport, quantize_model
from .config import QuantizationConfig, quantization_config

KEY = "archlab_quantization"


def quantized_path(ckpt: str | Path, method: str) -> Path:
    """Where ``archlab quantize`` writes: next to the source, ``last.ckpt`` -> ``last.int8_weight_only.ckpt``."""
    ckpt = Path(ckpt)
    return ckpt.with_name(f"{ckpt.stem}.{method}.ckpt")


def save_quantized(path: str | Path, hparams: dict[str, Any], model: nn.Module, cfg: QuantizationConfig,
                   report: QuantizationReport, source: str | None = None) -> Path:
    """Write the quantized ``model`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    payload = {
        "hyper_parameters": dict(hparams),
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        KEY: {"config": cfg.post_training().to_dict(), "trained_with": cfg.method if cfg.spec.kind == "qat" else None,
              "source": source, "report": report.to_dict()},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def quantization_of(ckpt: dict[str, Any]) -> QuantizationConfig | None:
    """The quantization a loaded checkpoint holds (None: full precision)."""
    record = ckpt.get(KEY)
    return quantization_config(record["config"]) if record else None


def load_quantized_state(model: nn.Module, cfg: QuantizationConfig, state: dict[str, torch.Tensor]) -> None:
    """Give a freshly built ``model`` the quantized structure of ``cfg``, then the saved quantized tensors.
    Weights tied before (embedding and head) are tied again: loading assigns each key its own tensor."""
    tied: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            tied.setdefault(id(param), []).append((module, name))
    groups = [owners for owners in tied.values() if len(owners) > 1]
    quantize_model(model, cfg)
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as err:
        raise ConfigError(f"ckpt: the quantized state does not fit the model rebuilt with {cfg.method}: "
                          f"{str(err).splitlines()[0][:300]}") from None
    for owners in groups:
        first = getattr(owners[0][0], owners[0][1])
        if all(type(getattr(m, n)) in (torch.Tensor, nn.Parameter) for m, n in owners):
            for module, name in owners[1:]:
                setattr(module, name, first)
