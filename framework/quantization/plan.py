"""Which weights of a model a quantization config quantizes, and why the others stay in full precision.

The rules are generic (no plugin is named): every ``nn.Linear``; the token embedding and the output head (a Linear
with ``vocab_size`` outputs outside the list of layers, or one tied to an embedding) only with ``include_embeddings``; the stacked expert
weights of ``GroupedExperts``; never a Linear inside a module that declares ``full_precision_reason`` (the MoE
router). Recurrent cells (``nn.LSTM``/``nn.GRU``/``nn.RNN``) are reported as kept: their fused kernels take float
weights and torchao quantizes no recurrent cell.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from framework.config_schema import ConfigError
from framework.nn.moe.experts import GroupedExperts

from .config import QuantizationConfig

PACKED_ROWS = 16  # torch's int4 CPU packing (_convert_weight_to_int4pack_for_cpu) tiles output rows by 16
INT8PACK_COLUMNS = 8  # torch's _weight_int8pack_mm CPU kernel: input widths in multiples of 8 (measured)

Kind = Literal["linear", "head", "embedding", "experts", "recurrent"]


@dataclass(frozen=True)
class Decision:
    name: str  # the module's path in the model ("blocks.0.mixer.q_proj")
    kind: Kind
    shape: tuple[int, ...]  # its weight's shape
    quantize: bool
    reason: str = ""  # why it stays in full precision (empty when quantized)


def _vocab_size(model: nn.Module) -> int | None:
    return getattr(getattr(model, "config", None), "vocab_size", None)


def _misfit(cfg: QuantizationConfig, label: str, inputs: list[int], outputs: int | None = None) -> str | None:
    """Why ``cfg``'s groups (or the packed format's row tiles) do not fit a weight with these input dimensions
    (``label``: how the model calls them) and output rows; None when they fit."""
    bad = sorted({d for d in inputs if d % cfg.group_size}) if cfg.spec.grouped else []
    if bad:
        return f"{label} {', '.join(map(str, bad))} not a multiple of group_size {cfg.group_size}"
    if outputs is not None and cfg.int4_format == "packed" and outputs % PACKED_ROWS:
        return f"out_features {outputs} not a multiple of {PACKED_ROWS} (the packed int4 CPU kernel's tile)"
    if outputs is not None and cfg.int8_kernel == "int8pack" and any(d % INT8PACK_COLUMNS for d in inputs):
        # torch 2.13's kernel does not check: other widths crash it for more than one row
        return f"in_features {inputs[0]} not a multiple of {INT8PACK_COLUMNS} (the int8pack kernel's)"
    return None


def plan(model: nn.Module, cfg: QuantizationConfig) -> list[Decision]:
    """One decision per quantizable module of ``model`` (in module order). Raises ConfigError naming every
    layer whose in_features ``group_size`` does not divide, unless ``skip_indivisible``."""
    vocab = _vocab_size(model)
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    kept_by_parent: dict[str, str] = {}
    decisions: list[Decision] = []
    indivisible: list[str] = []

    def decide(name: str, kind: Kind, shape: tuple[int, ...], kept: str | None, misfit: str | None) -> None:
        if kept is None and misfit is not None and not cfg.skip_indivisible:
            indivisible.append(f"{name} ({misfit.split(' not ')[0]})")
        reason = kept or misfit
        decisions.append(Decision(name, kind, shape, reason is None, reason or ""))

    for name, module in model.named_modules():
        reason = getattr(module, "full_precision_reason", None)
        if reason:
            kept_by_parent[name + "."] = reason
        inherited = next((r for prefix, r in kept_by_parent.items() if name.startswith(prefix)), None)
        if isinstance(module, nn.Linear):
            tied = id(module.weight) in embedding_weights
            outside_layers = not any(part.isdigit() for part in name.split("."))  # not in a ModuleList of layers
            head = tied or (outside_layers and vocab is not None and module.out_features == vocab)
            kept = inherited
            if kept is None and head and not cfg.include_embeddings:
                kept = (f"{'output head tied to the token embedding' if tied else 'output head'} "
                        "(quantization.include_embeddings=true quantizes it)")
            decide(name, "head" if head else "linear", tuple(module.weight.shape), kept,
                   _misfit(cfg, "in_features", [module.in_features], module.out_features))
        elif isinstance(module, nn.Embedding):
            kept = None if cfg.include_embeddings else "token embedding (quantization.include_embeddings=true quantizes it)"
            decide(name, "embedding", tuple(module.weight.shape), kept,
                   _misfit(cfg, "embedding_dim", [module.embedding_dim]))
        elif isinstance(module, GroupedExperts):  # stacked weights, always stored unpacked
            decide(name, "experts", tuple(module.up_proj.shape), None,
                   _misfit(cfg, "expert in_features", [w.shape[-1] for w, _ in module.projections()]))
        elif isinstance(module, nn.RNNBase):
            decide(name, "recurrent", tuple(module.weight_ih_l0.shape),
                   f"fused {type(module).__name__} kernel takes float weights (torchao quantizes no recurrent cell)",
                   None)
    if indivisible:
        layers = f"{'; '.join(indivisible[:6])}{' ...' if len(indivisible) > 6 else ''}"
        if cfg.spec.grouped:
            divisors = [g for g in (8, 16, 32, 64, 128, 256) if g < cfg.group_size]
            rule = (f"quantization.group_size: {cfg.group_size} (int4_format {cfg.int4_format!r}) does not fit {layers}: "
                    f"in_features must be a multiple of group_size (e.g. one of {divisors})"
                    f"{' and out_features of 16' if cfg.int4_format == 'packed' else ''}")
        else:
            rule = (f"quantization.int8_kernel: 'int8pack' does not fit {layers}: its kernel takes in_features in "
                    f"multiples of {INT8PACK_COLUMNS}; use int8_kernel=torchao")
        raise ConfigError(f"{rule}; or set quantization.skip_indivisible=true to keep those layers in full precision")
    return decisions
