"""Normalisation layers by name."""
from __future__ import annotations

from typing import Literal

from torch import nn

NormKind = Literal["layernorm", "rmsnorm"]


def make_norm(kind: NormKind, dim: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":  # no mean subtraction, no bias (Llama, T5)
        return nn.RMSNorm(dim, eps=eps)
    raise ValueError(f"norm: {kind!r} is not one of 'layernorm', 'rmsnorm'")
