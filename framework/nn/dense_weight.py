"""A weight as a plain tensor, for code that reshapes, slices or stacks weights itself."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def is_quantized(weight: torch.Tensor) -> bool:
    """True for a torchao tensor subclass (integer data and scales), False for a plain tensor or parameter."""
    return type(weight) not in (torch.Tensor, torch.nn.Parameter)


def dense(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` itself, or a quantized one (a torchao tensor subclass: integer data and scales) dequantized.

    ``F.linear`` takes quantized weights as they are; reshapes, indexing and grouped matmuls do not. Packed
    formats whose only kernel is the matmul (torchao's ``Int4OpaqueTensor``: no ``dequantize``) are read back
    through it: linear(I, W) = I W^T."""
    if not is_quantized(weight):
        return weight
    try:
        return weight.dequantize()
    except NotImplementedError:
        eye = torch.eye(weight.shape[1], dtype=weight.dtype, device=weight.device)
        return F.linear(eye, weight).t()
