"""Everything archlab asks of torchao, in one place: its configs per method, and quantized tensors for the
weights torchao's module swaps do not reach (the stacked expert weights of ``GroupedExperts``).

torchao is imported on first use only: training without quantization never loads it (its import logs lines
about CUDA-only extensions, silenced here).
"""
from __future__ import annotations

import logging
from functools import cache
from types import ModuleType
from typing import Any

import torch

from .config import QuantizationConfig


@cache
def torchao() -> ModuleType:
    """``torchao.quantization``, imported once with its load-time chatter (missing CUDA extensions, a torch
    deprecation notice from its pytree registrations) kept out of the user's terminal."""
    noisy = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [log.level for log in noisy]
    for log in noisy:
        log.setLevel(logging.ERROR)
    try:
        import torchao.quantization as quantization
        import torchao.quantization.qat  # noqa: F401 - QATConfig and the fake quantizers
        import torchao.prototype.mx_formats  # noqa: F401 - imported lazily by QAT's configs; its notice, here
        from torchao.prototype.quantization.int4 import Int4OpaqueTensor

        # torchao allow-lists its stable tensor types for torch.load(weights_only=True); the prototype packed
        # int4 type (int4_format=packed) is a tensor of the same kind, rebuilt from its data and shape only.
        torch.serialization.add_safe_globals([Int4OpaqueTensor])
    finally:
        for log, level in zip(noisy, levels):
            log.setLevel(level)
    return quantization


def _weight_config(cfg: QuantizationConfig, *, embedding: bool = False) -> Any:
    """The torchao config quantizing a Linear's (or, weight-only, an Embedding's) weight as ``cfg`` says."""
    tq = torchao()
    from torchao.quantization.granularity import PerAxis, PerGroup

    spec = cfg.spec
    if spec.weight_bits == 8:
        if spec.dynamic_activations and not embedding:
            return tq.Int8DynamicActivationInt8WeightConfig()
        return tq.Int8WeightOnlyConfig() if not embedding else tq.IntxWeightOnlyConfig(
            weight_dtype=torch.int8, granularity=PerAxis(0))
    if spec.dynamic_activations and not embedding:
        return tq.Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                        weight_granularity=PerGroup(cfg.group_size))
    if cfg.int4_format == "packed" and not embedding:
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

        return PrototypeInt4WeightOnlyConfig(group_size=cfg.group_size)
    return tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(cfg.group_size))


def ptq_config(cfg: QuantizationConfig, *, embedding: bool = False) -> Any:
    """The post-training config for ``cfg.method`` (for a QAT method: the one its convert step targets)."""
    return _weight_config(cfg.post_training(), embedding=embedding)


def qat_config(cfg: QuantizationConfig, step: str, *, embedding: bool = False) -> Any:
    """``QATConfig(<the method's target config>, step="prepare" | "convert")``."""
    return torchao().qat.QATConfig(ptq_config(cfg, embedding=embedding), step=step)


def quantize_tensor(weight: torch.Tensor, cfg: QuantizationConfig) -> torch.Tensor:
    """A stacked (E, out, in) expert weight as a torchao quantized tensor, weight-only: int8 with one scale per
    (expert, output row), or int4 with one scale per group of ``group_size`` inputs. Dequantized for the matmul."""
    torchao()
    from torchao.quantization.granularity import PerRow
    from torchao.quantization.quantize_.workflows import IntxUnpackedToInt8Tensor
    from torchao.quantization.quantize_.workflows.int8.int8_tensor import Int8Tensor

    weight = weight.detach()
    if cfg.spec.weight_bits == 8:
        return Int8Tensor.from_hp(weight, granularity=PerRow())
    block = (1,) * (weight.dim() - 1) + (cfg.group_size,)
    return IntxUnpackedToInt8Tensor.from_hp(weight, block_size=block, target_dtype=torch.int4)


def weight_fake_quantizer(cfg: QuantizationConfig) -> torch.nn.Module:
    """The fake quantizer QAT applies to a stacked expert weight: the same grid as ``quantize_tensor``."""
    qat = torchao().qat
    config = qat.IntxFakeQuantizeConfig(torch.int4, group_size=cfg.group_size, is_symmetric=True)
    return qat.FakeQuantizerBase.from_config(config)


def is_quantized(tensor: torch.Tensor) -> bool:
    """A torchao quantized tensor (a tensor subclass holding integer data and scales)."""
    return type(tensor) not in (torch.Tensor, torch.nn.Parameter) and hasattr(tensor, "tensor_data_names")


def storage_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds: its storage, or for a torchao tensor the sum of its integer data and scales."""
    if not is_quantized(tensor):
        return tensor.numel() * tensor.element_size()
    names = list(tensor.tensor_data_names) + list(getattr(tensor, "optional_tensor_data_names", None) or [])
    parts = [getattr(tensor, name, None) for name in names]
    return sum(storage_bytes(part) for part in parts if isinstance(part, torch.Tensor))
