"""Longformer: a (optionally dilated) sliding window plus global tokens. Global positions (the first
``n_global``, e.g. a task prompt) attend to every position and every position attends to them."""
from __future__ import annotations

import torch

from .base import SparsePattern, union
from .window import window_allowed, window_candidates


class Longformer(SparsePattern):
    name = "longformer"

    def __init__(
        self, window: int, n_global: int, causal: bool = True, block_size: int = 64, dilation: int = 1
    ) -> None:
        super().__init__(causal, block_size)
        if window < 1 or dilation < 1 or n_global < 0:
            raise ValueError(f"need window >= 1, dilation >= 1, n_global >= 0; got {window}, {dilation}, {n_global}")
        self.window, self.dilation = window, dilation
        self.n_global = n_global

    def allowed_pattern(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return window_allowed(q, k, self.window, self.dilation, self.causal)  # globals: added by the base

    def candidate_keys(self, block: int, t: int) -> torch.Tensor:
        local = window_candidates(block, self.block_size, t, self.window, self.dilation, self.causal)
        e = min((block + 1) * self.block_size, t)
        g = self.global_pos[self.global_pos < (e if self.causal else t)]
        return union(local, g)
