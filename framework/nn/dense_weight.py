"""A weight as a plain tensor, for code that reshapes, slices or stacks weights itself."""
from __future__ import annotations

import torch


def dense(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` itself, or a quantized one (a torchao tensor subclass: integer data and scales) dequantized.

    ``F.linear`` takes quantized weights as they are; reshapes, indexing and grouped matmuls do not."""
    return weight if type(weight) in (torch.Tensor, torch.nn.Parameter) else weight.dequantize()
