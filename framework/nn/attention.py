"""Multi-head self-attention with grouped-query heads, RoPE/ALiBi, padding masks and a KV cache."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .attention_stats import sparsity_stats
from .kv_cache import KVCache
from .positions import RotaryEmbedding, alibi_bias, alibi_slopes
from .sdpa import attention

AttentionPosition = Literal["rope", "alibi", "none"]


class SelfAttention(nn.Module):
    """Scaled dot-product self-attention through ``F.scaled_dot_product_attention``.

    n_kv_heads < n_heads gives grouped-query attention (each key/value head serves n_heads/n_kv_heads
    query heads); ``position`` applies RoPE or ALiBi inside attention ("none" when positions are
    added to the embeddings instead).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        *,
        causal: bool = True,
        bias: bool = True,
        dropout: float = 0.0,
        position: AttentionPosition = "none",
        max_seq_len: int = 1024,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(f"d_model ({d_model}) % n_heads ({n_heads}) and n_heads % n_kv_heads ({n_kv_heads}) must be 0")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, d_model // n_heads
        self.causal, self.dropout, self.position = causal, dropout, position
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)
        self.rope = RotaryEmbedding(self.head_dim, max_seq_len, rope_theta) if position == "rope" else None
        if position == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(n_heads), persistent=False)
        # Attention-sparsity statistics, recomputed for a few queries only while recording (validation).
        self.record_stats = False
        self.last_stats: dict[str, torch.Tensor] | None = None

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        """x: (B, T, C); attention_mask: (B, S) with 1 = real token, 0 = padding, over all S keys
        (cached + new). Returns (B, T, C)."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        offset = cache.length if cache is not None else 0
        if self.rope is not None:
            q, k = self.rope(q, k, offset)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, Hkv, S, D)
        mask = self._mask(b, t, k.shape[-2], attention_mask, x.device, q.dtype)
        if self.record_stats:
            k_full = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)  # (B, H, S, D)
            bias = mask
            if bias is None and self.causal and t > 1:
                bias = causal_bias(t, k.shape[-2], x.device)
            self.last_stats = sparsity_stats(q, k_full, bias)
        use_causal_flag = mask is None and self.causal and t > 1
        y = attention(  # SDPA (in fp32 for small heads on CPU: framework/nn/sdpa.py)
            q, k, v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=use_causal_flag,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )  # (B, H, T, D)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))

    # ---- the token-mixer contract of framework.stack (framework/mixers/spec.py) -----------------
    def new_state(self) -> KVCache | None:
        """The decode state: a KV cache that grows by one position per generated token."""
        return KVCache()

    @torch.no_grad()
    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.o_proj.weight, std=out_std)  # a residual output projection (GPT-2)

    def mixer_stats(self) -> dict[str, torch.Tensor]:
        """Shared statistics of the last forward: density (1 for dense attention) and, while recording,
        normalised entropy and top-k mass of the attention distribution."""
        # torch.ones, not weight.new_ones: a quantized weight (a torchao tensor subclass) has no new_ones
        stats = {"attn/density": torch.ones((), device=self.q_proj.weight.device)}
        if self.last_stats is not None:
            stats["attn/entropy"] = self.last_stats["entropy_norm"]
            stats["attn/topk_mass"] = self.last_stats["topk_mass"]
        return stats

    def _mask(
        self, b: int, t: int, s: int, attention_mask: torch.Tensor | None, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor | None:
        """None when SDPA's own causal flag suffices; else a float (B|1, H|1, T, S) additive mask."""
        if attention_mask is None and self.position != "alibi" and (not self.causal or t == 1 or t == s):
            return None
        bias = additive_mask(t, s, attention_mask, self.causal, device, dtype)
        if self.position == "alibi":
            bias = bias + alibi_bias(self.alibi_slopes, t, s, device).to(dtype)[None]
        return bias


def additive_mask(t: int, s: int, attention_mask: torch.Tensor | None, causal: bool, device: torch.device,
                  dtype: torch.dtype) -> torch.Tensor:
    """(B|1, 1, T, S) additive mask (0 / -inf) for queries at the last t of s positions: causal if asked, padding
    keys (attention_mask 0) masked, but a query always sees itself, so padded rows are never all -inf (no NaN)."""
    allowed = torch.ones(t, s, dtype=torch.bool, device=device)
    if causal:
        allowed = allowed.tril(diagonal=s - t)
    allowed = allowed[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        keep = attention_mask[:, None, None, :].bool()  # (B, 1, 1, S)
        allowed = allowed & (keep | _diagonal(t, s, device)[None, None])
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))


def causal_bias(t: int, s: int, device: torch.device) -> torch.Tensor:
    allowed = torch.ones(t, s, dtype=torch.bool, device=device).tril(diagonal=s - t)
    return torch.zeros(t, s, device=device).masked_fill(~allowed, float("-inf"))[None, None]


def _diagonal(t: int, s: int, device: torch.device) -> torch.Tensor:
    """(T, S) bool, True where query i (absolute position s-t+i) meets its own key."""
    q_pos = torch.arange(s - t, s, device=device)[:, None]
    return q_pos == torch.arange(s, device=device)[None, :]
