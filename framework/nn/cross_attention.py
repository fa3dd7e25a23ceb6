"""Multi-head attention for encoder-decoder models: encoder self-attention, causal decoder
self-attention (KV cache) and cross-attention to the encoder output (projected once, then cached).

Differs from ``SelfAttention`` in what encoder-decoders need: keys from another sequence, an additive
position bias (T5's relative bias), an optional score scale (T5 uses 1.0: the scale is folded into
its initialisation), and padding masks on keys of either sequence.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .attention_stats import sparsity_stats
from .kv_cache import KVCache
from .sdpa import attention


class MultiHeadAttention(nn.Module):
    """``causal=True`` for decoder self-attention; ``cross=True`` takes keys/values from ``memory``."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        causal: bool = False,
        cross: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.causal, self.cross, self.dropout, self.scale = causal, cross, dropout, scale
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.o_proj = nn.Linear(d_model, d_model, bias=bias)
        self.record_stats = False  # attention entropy / top-k mass, switched on for validation batches
        self.last_stats: dict[str, torch.Tensor] | None = None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        position_bias: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mask: AttentionMask | None = None,
    ) -> torch.Tensor:
        """x: (B, T, C) queries; memory: (B, S, C) for cross-attention; key_mask: (B, S) 1 = token,
        0 = padding, over all keys (for self-attention with a cache: cached + new); position_bias:
        broadcastable to (B, H, T, S). ``mask`` replaces key_mask/position_bias with one built by
        ``build_mask`` (once per stack, shared by its layers). A cross-attention cache holds the
        projected memory after the first call; a self-attention cache grows by T. Returns (B, T, C)."""
        b, t, _ = x.shape
        q = self._heads(self.q_proj(x))
        if self.cross:
            if cache is not None and cache.k is not None:
                k, v = cache.k, cache.v  # memory projected on the first decoding step
            else:
                k, v = self._heads(self.k_proj(memory)), self._heads(self.v_proj(memory))  # (B, H, S, D)
                if cache is not None:
                    cache.update(k, v)
        else:
            k, v = self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
            if cache is not None:
                k, v = cache.update(k, v)  # (B, H, S, D), S = cached + T
        if mask is None:
            causal = self.causal and not self.cross
            mask = build_mask(t, k.shape[-2], causal=causal, key_mask=key_mask, position_bias=position_bias,
                              device=x.device)
        additive = mask.additive.to(q.dtype) if mask.additive is not None else None
        if self.record_stats:
            scale = self.scale if self.scale is not None else self.head_dim**-0.5
            # sparsity_stats divides by sqrt(D); fold our scale in through q.
            self.last_stats = sparsity_stats(q * (scale * self.head_dim**0.5), k, mask.for_stats(t, k.shape[-2], x.device))
        dropout = self.dropout if self.training else 0.0
        if additive is not None and additive.requires_grad and q.device.type == "cpu":
            y = biased_attention(q, k, v, additive, dropout, self.scale)
        else:
            y = attention(q, k, v, attn_mask=additive, dropout_p=dropout, scale=self.scale)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))  # y: (B, H, T, D)


def biased_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, dropout: float = 0.0,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v for a learned bias (T5's relative positions): (B, H, T, D).

    SDPA has no fused CPU kernel that returns a gradient for its mask, so it falls back to its math path,
    whose NaN-safe softmax spends three extra passes over the (B, H, T, S) scores (isneginf, all,
    where): ~6% of a T5 training step. Our masks use the dtype's minimum, never -inf, so a plain softmax
    is exact here."""
    if scale is None or scale != 1.0:
        q = q * (q.shape[-1] ** -0.5 if scale is None else scale)
    scores = torch.matmul(q, k.transpose(-1, -2)).add_(bias)  # in place: matmul's backward does not need it
    if scores.dtype in (torch.float16, torch.bfloat16):  # softmax in fp32 under autocast
        scores = scores.float()
    probs = F.dropout(scores.softmax(-1).to(v.dtype), dropout, training=dropout > 0)
    return torch.matmul(probs, v)


class AttentionMask(NamedTuple):
    """What a stack's layers share: ``additive`` (B|1, H|1, T, S) float = position bias, and the
    dtype's minimum (not -inf: a fully masked row stays finite) where a key is not allowed; None when
    nothing is masked or biased. ``allowed`` (B|1, 1, T, S) bool, None when every key is allowed."""

    additive: torch.Tensor | None
    allowed: torch.Tensor | None

    def for_stats(self, t: int, s: int, device: torch.device) -> torch.Tensor:
        """Bias with -inf on disallowed keys, as ``sparsity_stats`` expects."""
        base = self.additive if self.additive is not None else torch.zeros(1, 1, t, s, device=device)
        return base if self.allowed is None else base.masked_fill(~self.allowed, float("-inf"))


def build_mask(
    t: int,
    s: int,
    *,
    causal: bool = False,
    key_mask: torch.Tensor | None = None,
    position_bias: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> AttentionMask:
    """The additive mask for T queries (the last T of S positions when causal) against S keys.

    A key_mask without padding is dropped: the mask then stays (1, H, T, S) (or None, so SDPA can take its
    fused kernel) instead of a (B, H, T, S) copy of the position bias whose gradient is B times larger."""
    if device is None:
        device = key_mask.device if key_mask is not None else position_bias.device if position_bias is not None else None
    if key_mask is not None and bool(key_mask.all()):
        key_mask = None
    allowed = None
    if causal and t > 1:
        allowed = torch.ones(t, s, dtype=torch.bool, device=device).tril(diagonal=s - t)[None, None]
    if key_mask is not None:
        keep = key_mask[:, None, None, :].bool()  # (B, 1, 1, S)
        allowed = keep if allowed is None else allowed & keep
    # Contiguous: the bias arrives as a permuted (1, H, T, S) view of a (T, S, H) lookup, and the attention
    # adds it to every (B, H, T, S) score tensor, which runs ~3x slower on a strided operand.
    bias = position_bias.to(dtype).contiguous() if position_bias is not None else None
    if allowed is None:
        return AttentionMask(bias, None)
    base = bias if bias is not None else torch.zeros((), dtype=dtype, device=device)
    return AttentionMask(torch.where(allowed, base, torch.finfo(dtype).min), allowed)


class DecoderCache:
    """Per-layer caches for incremental decoding: self-attention keys/values (grow by one token per
    step) and cross-attention keys/values (the encoder output, projected once)."""

    def __init__(self, n_layers: int) -> None:
        self.self_attn = [KVCache() for _ in range(n_layers)]
        self.cross_attn = [KVCache() for _ in range(n_layers)]

    @property
    def length(self) -> int:
        """Decoder positions already cached."""
        return self.self_attn[0].length

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (beam search picks surviving beams). Cross-attention rows of beams
        from one example are identical, but are reindexed too so any reordering stays valid."""
        for cache in self.self_attn + self.cross_attn:
            if cache.k is not None:
                cache.k, cache.v = cache.k.index_select(0, index), cache.v.index_select(0, index)
