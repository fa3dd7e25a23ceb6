"""Sliding-window (local) attention, optionally dilated (Longformer): query i sees keys j with
|i - j| < window * dilation and (i - j) divisible by dilation (only j <= i when causal)."""
from __future__ import annotations

import torch

from .base import SparsePattern, arange_clip


def window_allowed(q: torch.Tensor, k: torch.Tensor, window: int, dilation: int, causal: bool) -> torch.Tensor:
    d = q - k
    reach = d.abs() < window * dilation
    if dilation > 1:
        reach = reach & (d.remainder(dilation) == 0)
    return reach & (d >= 0) if causal else reach


def window_candidates(block: int, bs: int, t: int, window: int, dilation: int, causal: bool) -> torch.Tensor:
    s, e = block * bs, min((block + 1) * bs, t)
    span = (window - 1) * dilation
    keys = arange_clip(s - span, e if causal else e + span, t)
    if dilation > 1 and e - s < dilation:  # only the residues of this block's queries can match
        residues = torch.arange(s, e).remainder(dilation)
        keys = keys[torch.isin(keys.remainder(dilation), residues)]
    return keys


class SlidingWindow(SparsePattern):
    name = "sliding_window"

    def __init__(self, window: int, causal: bool = True, block_size: int = 64, dilation: int = 1) -> None:
        super().__init__(causal, block_size)
        if window < 1 or dilation < 1:
            raise ValueError(f"window and dilation must be >= 1, got {window}, {dilation}")
        self.window, self.dilation = window, dilation

    def allowed_pattern(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return window_allowed(q, k, self.window, self.dilation, self.causal)

    def candidate_keys(self, block: int, t: int) -> torch.Tensor:
        return window_candidates(block, self.block_size, t, self.window, self.dilation, self.causal)

    def lookback(self) -> int | None:
        return (self.window - 1) * self.dilation if self.causal and not self.n_global else None

    def regular_offset(self) -> int | None:
        return -(self.window - 1) * self.dilation if self.dilation == 1 else None
