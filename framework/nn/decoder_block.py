"""A generic pre-norm decoder block: x + attn(norm(x)), then x + ffn(norm(x)), for any attention and FFN.

The FFN may return a tensor (dense) or an ``MoEOutput``; the block returns the FFN's extras as a value
(``None`` for a dense FFN) so the model can sum aux losses and collect stats.
"""
from __future__ import annotations

import torch
from torch import nn

from .kv_cache import KVCache
from .moe import MoEFeedForward, MoEOutput


class PreNormBlock(nn.Module):
    def __init__(self, attn: nn.Module, ffn: nn.Module, attn_norm: nn.Module, ffn_norm: nn.Module,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.attn, self.ffn, self.attn_norm, self.ffn_norm = attn, ffn, attn_norm, ffn_norm
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: KVCache | None = None) -> tuple[torch.Tensor, MoEOutput | None]:
        """x: (B, T, C) -> (B, T, C) and the MoE layer's output record (None for a dense FFN)."""
        x = x + self.resid_dropout(self.attn(self.attn_norm(x), attention_mask, cache))
        h = self.ffn_norm(x)
        if isinstance(self.ffn, MoEFeedForward):
            moe = self.ffn(h, attention_mask)
            return x + moe.output, moe
        return x + self.ffn(h), None
