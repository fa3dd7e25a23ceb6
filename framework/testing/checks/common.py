"""Helpers every check shares: failing with a message, comparing logits with a tolerance."""
from __future__ import annotations

from typing import NoReturn

import torch

from ..report import ContractViolation

ATOL = 1e-4  # float32 outputs of tiny models; leaks and mask bugs move logits by far more


def fail(message: str) -> NoReturn:
    raise ContractViolation(message)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and max_diff(a, b) <= ATOL * max(1.0, float(b.abs().max()) if b.numel() else 1.0)
