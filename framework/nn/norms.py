"""Normalisation layers by name."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

NormKind = Literal["layernorm", "rmsnorm"]


def make_norm(kind: NormKind, dim: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":  # no mean subtraction, no bias (Llama, T5)
        return nn.RMSNorm(dim, eps=eps)
    raise ValueError(f"norm: {kind!r} is not one of 'layernorm', 'rmsnorm'")


@torch.no_grad()
def residual_rms(x: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of the RMS over channels of x (..., C), a scalar statistic: L2 norm / sqrt(C) in one
    fused reduction (no (..., C) temporaries), accumulated in fp32 (fp64 for fp64 inputs)."""
    norms = torch.linalg.vector_norm(x, dim=-1, dtype=torch.promote_types(x.dtype, torch.float32))
    return norms.mean() / x.shape[-1] ** 0.5
