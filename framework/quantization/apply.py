"""Quantize a model in place: post-training (``quantize_model``) or around training (``prepare_qat`` then
``convert_qat``). torchao swaps or re-types the chosen ``nn.Linear``/``nn.Embedding`` weights; the stacked
expert weights of ``GroupedExperts`` become torchao tensors here (dequantized for their grouped matmuls)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from framework.config_schema import ConfigError
from framework.nn.moe.experts import GroupedExperts

from .config import METHODS, QuantizationConfig
from .int8pack import Int8PackedLinear
from .plan import Decision, plan
from .torchao_backend import (is_quantized, ptq_config, qat_config, quantize_tensor, storage_bytes,
                              torchao, weight_fake_quantizer)


@dataclass
class QuantizationReport:
    """What a quantization did: per module, and in bytes (the body's matmul weights, and the whole model)."""

    method: str
    group_size: int | None
    decisions: list[Decision]
    linear_bytes_before: int  # Linear and expert weights of the layers (not the embedding or the head)
    linear_bytes_after: int
    model_bytes_before: int  # every parameter and buffer, shared storages once
    model_bytes_after: int
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. val losses, filled by `archlab quantize`

    @property
    def quantized(self) -> list[str]:
        return [d.name for d in self.decisions if d.quantize]

    @property
    def kept(self) -> dict[str, str]:
        return {d.name: d.reason for d in self.decisions if not d.quantize}

    def row(self) -> dict[str, Any]:
        """One flat row (for the report table and JSON)."""
        return {
            "method": self.method, "group_size": self.group_size,
            "quantized_modules": len(self.quantized), "kept_modules": len(self.kept),
            "linear_bytes_before": self.linear_bytes_before, "linear_bytes_after": self.linear_bytes_after,
            "linear_bytes_ratio": round(self.linear_bytes_after / max(1, self.linear_bytes_before), 4),
            "model_bytes_before": self.model_bytes_before, "model_bytes_after": self.model_bytes_after,
            "model_bytes_ratio": round(self.model_bytes_after / max(1, self.model_bytes_before), 4),
            **self.extra,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.row(), "quantized": self.quantized, "kept": self.kept}


def _weights_of(module: nn.Module) -> list:
    if isinstance(module, GroupedExperts):
        return [w for w, _ in module.projections()]
    if isinstance(module, Int8PackedLinear):
        return [module.qweight, module.scales]
    return [module.weight]


def linear_bytes(model: nn.Module, decisions: list[Decision]) -> int:
    return sum(storage_bytes(w) for d in decisions if d.kind in ("linear", "experts")
               for w in _weights_of(model.get_submodule(d.name)))


def model_bytes(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += storage_bytes(tensor)
    return total


def _refuse_quantized(model: nn.Module) -> None:
    packed = any(isinstance(m, Int8PackedLinear) for m in model.modules())
    if packed or any(is_quantized(p) for p in model.parameters()):
        raise ConfigError("quantization: this model is already quantized; quantize its full-precision checkpoint "
                          "instead (quantizing twice would compound the rounding)")


def _apply(model: nn.Module, decisions: list[Decision], linear_config: Any, embedding_config: Any) -> None:
    quantize_ = torchao().quantize_
    linears = {d.name for d in decisions if d.quantize and d.kind in ("linear", "head")}
    embeddings = {d.name for d in decisions if d.quantize and d.kind == "embedding"}
    if linears and linear_config == "int8pack":
        for name in linears:  # PyTorch's int8-pack kernel: a module swap (torchao has no config for it)
            parent, _, child = name.rpartition(".")
            holder = model.get_submodule(parent) if parent else model
            setattr(holder, child, Int8PackedLinear.from_linear(getattr(holder, child)))
    elif linears:
        quantize_(model, linear_config, filter_fn=lambda m, fqn: fqn in linears)
    if embeddings:
        quantize_(model, embedding_config, filter_fn=lambda m, fqn: fqn in embeddings)


def _quantize_experts(model: nn.Module, decisions: list[Decision], cfg: QuantizationConfig) -> None:
    for d in decisions:
        if d.quantize and d.kind == "experts":
            experts = model.get_submodule(d.name)
            experts.weight_quantizer = None
            for attr in ("gate_proj", "up_proj", "down_proj"):
                weight = getattr(experts, attr)
                if weight is not None:
                    setattr(experts, attr, nn.Parameter(quantize_tensor(weight, cfg), requires_grad=False))


def _report(cfg: QuantizationConfig, model: nn.Module, decisions: list[Decision], before: tuple[int, int]) -> QuantizationReport:
    return QuantizationReport(cfg.method, cfg.group_size if cfg.spec.grouped else None, decisions, before[0],
                              linear_bytes(model, decisions), before[1], model_bytes(model))


def check_post_training(cfg: QuantizationConfig) -> None:
    """``cfg`` must be a post-training method: a QAT method or ``none`` is refused with what to run instead."""
    if cfg.spec.kind == "qat":
        raise ConfigError(f"quantization: {cfg.method!r} is a quantization-aware training method: it runs with "
                          f"`archlab train quantization={cfg.method}` (fake quantization while training, converted "
                          f"at the end); post-training quantization of a checkpoint takes one of "
                          f"{', '.join(m for m, s in METHODS.items() if s.kind == 'ptq')}")
    if cfg.spec.kind == "none":
        raise ConfigError("quantization: method 'none' quantizes nothing; choose one of "
                          f"{', '.join(m for m, s in METHODS.items() if s.kind == 'ptq')}")


def quantize_model(model: nn.Module, cfg: QuantizationConfig) -> QuantizationReport:
    """Post-training quantization of ``model`` in place with ``cfg`` (a PTQ method)."""
    check_post_training(cfg)
    _refuse_quantized(model)
    decisions = plan(model, cfg)
    before = linear_bytes(model, decisions), model_bytes(model)
    linear_config = "int8pack" if cfg.int8_kernel == "int8pack" else ptq_config(cfg)
    _apply(model, decisions, linear_config, ptq_config(cfg, embedding=True))
    _quantize_experts(model, decisions, cfg)
    return _report(cfg, model, decisions, before)


def prepare_qat(model: nn.Module, cfg: QuantizationConfig) -> list[Decision]:
    """Insert fake quantization (QAT's prepare step): the chosen Linears become torchao ``FakeQuantizedLinear``
    (same parameters and state-dict keys), experts get a weight fake quantizer."""
    if cfg.spec.kind != "qat":
        raise ConfigError(f"quantization: {cfg.method!r} is a post-training method: it runs on a trained "
                          f"checkpoint with `archlab quantize ckpt=... quantization={cfg.method}`; training "
                          f"with fake quantization takes one of {', '.join(m for m, s in METHODS.items() if s.kind == 'qat')}")
    _refuse_quantized(model)
    decisions = plan(model, cfg)
    _apply(model, decisions, qat_config(cfg, "prepare"), qat_config(cfg, "prepare", embedding=True))
    for d in decisions:
        if d.quantize and d.kind == "experts":
            model.get_submodule(d.name).weight_quantizer = weight_fake_quantizer(cfg)
    return decisions


def convert_qat(model: nn.Module, cfg: QuantizationConfig) -> QuantizationReport:
    """QAT's convert step: fake-quantized modules become really quantized (the method's PTQ twin)."""
    decisions = plan(model, cfg)
    before = linear_bytes(model, decisions), model_bytes(model)
    _apply(model, decisions, qat_config(cfg, "convert"), qat_config(cfg, "convert", embedding=True))
    _quantize_experts(model, decisions, cfg)
    return _report(cfg, model, decisions, before)
