"""The factorised patterns of the Sparse Transformer (Child et al. 2019), each as two halves that are
split across heads or alternated across layers (see ``config.build_patterns``). Stride l:

  strided: "local"   j in the previous l positions;      "strided" (i - j) % l == 0
  fixed:   "block"   j in the same l-block as i;          "summary" j % l >= l - c (c summary columns)
"""
from __future__ import annotations

from typing import Literal

import torch

from .base import SparsePattern, arange_clip
from .window import window_allowed, window_candidates


class Strided(SparsePattern):
    def __init__(self, stride: int, part: Literal["local", "strided"], causal: bool = True, block_size: int = 64) -> None:
        super().__init__(causal, block_size)
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride, self.part, self.name = stride, part, f"strided_{part}"

    def allowed_pattern(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.part == "local":
            return window_allowed(q, k, self.stride, 1, self.causal)
        return (q - k).remainder(self.stride) == 0

    def candidate_keys(self, block: int, t: int) -> torch.Tensor:
        bs = self.block_size
        if self.part == "local":
            return window_candidates(block, bs, t, self.stride, 1, self.causal)
        s, e = block * bs, min((block + 1) * bs, t)
        keys = torch.arange(e if self.causal else t)
        return keys[torch.isin(keys.remainder(self.stride), torch.arange(s, e).remainder(self.stride))]

    def regular_offset(self) -> int | None:
        return -(self.stride - 1) if self.part == "local" else None

    def query_order(self, t: int) -> torch.Tensor | None:
        if self.part == "local":
            return None
        pos = torch.arange(t)
        return pos[torch.argsort(pos.remainder(self.stride) * t + pos)]  # by residue, then position

    def candidate_keys_for(self, queries: torch.Tensor, t: int) -> torch.Tensor:
        keys = torch.arange(int(queries.max()) + 1 if self.causal else t)
        return keys[torch.isin(keys.remainder(self.stride), queries.remainder(self.stride))]


class Fixed(SparsePattern):
    def __init__(
        self, stride: int, n_summary: int, part: Literal["block", "summary"], causal: bool = True, block_size: int = 64
    ) -> None:
        super().__init__(causal, block_size)
        if not 1 <= n_summary <= stride:
            raise ValueError(f"need 1 <= n_summary <= stride, got {n_summary}, {stride}")
        self.stride, self.n_summary, self.part, self.name = stride, n_summary, part, f"fixed_{part}"

    def allowed_pattern(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.part == "block":
            return torch.div(q, self.stride, rounding_mode="floor") == torch.div(k, self.stride, rounding_mode="floor")
        return k.remainder(self.stride) >= self.stride - self.n_summary

    def candidate_keys(self, block: int, t: int) -> torch.Tensor:
        bs, l = self.block_size, self.stride
        s, e = block * bs, min((block + 1) * bs, t)
        if self.part == "block":
            return arange_clip((s // l) * l, e if self.causal else ((e - 1) // l + 1) * l, t)
        keys = torch.arange(e if self.causal else t)
        return keys[(keys.remainder(l) >= l - self.n_summary) | ((keys >= s) & (keys < e))]
