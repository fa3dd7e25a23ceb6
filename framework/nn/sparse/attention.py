"""SparseSelfAttention: ``SelfAttention`` (same projections, RoPE/ALiBi, GQA, KV cache, statistics) with
a sparse pattern or Reformer LSH in place of dense attention."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..attention import AttentionPosition, SelfAttention
from ..attention_stats import MAX_QUERIES, TOP_K, sparsity_stats
from ..kv_cache import KVCache
from .base import full_pairs
from .blocked import block_sparse_attention
from .config import HeadGroup, SparseAttentionConfig, build_patterns
from .lsh import LSHPlan, lsh_attention, make_rotations
from .stats import lsh_bucket_balance, lsh_recall, lsh_rows


class SparseSelfAttention(SelfAttention):
    """forward(x, attention_mask=None, cache=None) as ``SelfAttention``; ``kind`` picks the pattern.

    ``last_density`` (always): pairs computed / full (causal) attention pairs in the last forward.
    ``last_stats`` (while ``record_stats``): entropy / top-k mass as for dense attention, plus
    ``density`` and, for lsh, ``lsh_balance`` and ``lsh_recall``.
    Decoding against a KV cache evaluates the pattern's rows for the new queries only (O(t * s)).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        *,
        kind: str,
        sparse: SparseAttentionConfig,
        layer: int = 0,
        causal: bool = True,
        bias: bool = True,
        dropout: float = 0.0,
        position: AttentionPosition = "none",
        max_seq_len: int = 1024,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__(d_model, n_heads, n_kv_heads, causal=causal, bias=bias, dropout=dropout,
                         position=position, max_seq_len=max_seq_len, rope_theta=rope_theta)
        self.kind, self.sparse = kind, sparse
        self.groups: list[HeadGroup] = []
        if kind == "lsh":
            self.k_proj = None  # shared query-key projection: keys are the normalised queries
            rot = make_rotations(self.head_dim, sparse.n_buckets, sparse.n_hashes, sparse.seed + layer)
            self.register_buffer("rotations", rot, persistent=False)
        else:
            self.groups = build_patterns(kind, sparse, layer, n_heads, causal, max_seq_len)
        self.last_density: torch.Tensor | None = None
        self.last_plan: LSHPlan | None = None

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        """x: (B, T, C); attention_mask: (B, S) 1 = token, 0 = padding (S = cached + T). Returns (B, T, C)."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = v.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)  # (B, H, T, D)
        offset = cache.length if cache is not None else 0
        if self.kind == "lsh":
            if cache is not None:
                raise ValueError("lsh attention has no KV cache: generate with use_cache=False")
            if self.rope is not None:
                q, _ = self.rope(q, q, offset)
            y = self._lsh(q, v, attention_mask)
        else:
            k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
            k = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)  # (B, H, T, D)
            if self.rope is not None:
                q, k = self.rope(q, k, offset)
            if cache is not None:
                k, v = cache.update(k, v)  # (B, H, S, D): the cache holds expanded heads
            y = self._static(q, k, v, attention_mask, offset + t)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))

    def new_state(self) -> KVCache | None:
        if self.kind == "lsh":
            return None  # lsh re-hashes the whole context: no cache
        reach = [pattern.lookback() for *_, pattern in self.groups]
        return KVCache(keep=None if None in reach else max(reach))  # a causal window keeps only its reach

    def mixer_stats(self) -> dict[str, torch.Tensor]:
        stats = super().mixer_stats()
        if self.last_density is not None:
            stats["attn/density"] = self.last_density
        if self.last_stats is not None and "lsh_balance" in self.last_stats:
            stats["attn/lsh_balance"] = self.last_stats["lsh_balance"]
            stats["attn/lsh_recall"] = self.last_stats["lsh_recall"]
        return stats

    # ---- static patterns ----------------------------------------------------------------------
    def _slopes(self, h0: int, h1: int) -> torch.Tensor | None:
        return self.alibi_slopes[h0:h1] if self.position == "alibi" else None

    def _static(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor | None,
                total: int) -> torch.Tensor:
        """q: the last t of ``total`` positions; k, v: the last s (s < total once a windowed cache drops keys)."""
        t, s = q.shape[-2], k.shape[-2]
        if attention_mask is not None:
            attention_mask = attention_mask[:, -s:]
        outs, pairs = [], 0.0
        # Head groups as one split (its backward is one concatenation), not slices (each slice's gradient
        # would be a full-size zero tensor).
        sizes = [h1 - h0 for h0, h1, _ in self.groups]
        parts = zip(q.split(sizes, 1), k.split(sizes, 1), v.split(sizes, 1))
        for (h0, h1, pattern), (qg, kg, vg) in zip(self.groups, parts):
            if t == s:
                outs.append(block_sparse_attention(qg, kg, vg, pattern, attention_mask, self._slopes(h0, h1),
                                                   self.sparse.kernel))
                pairs += pattern.layout(t, q.device).pairs * (h1 - h0)
            else:  # decoding: the last t of s positions, pattern rows only
                outs.append(self._rows(qg, kg, vg, pattern, attention_mask, h0, h1, total))
        y = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)  # (B, H, T, D)
        if t == s:
            self.last_density = torch.tensor(pairs / (self.n_heads * full_pairs(t, self.causal)))
        if self.record_stats:
            self.last_stats = self._static_stats(q, k, attention_mask, total)
        return y

    def _row_bias(self, t: int, s: int, attention_mask: torch.Tensor | None, device: torch.device,
                  rows: torch.Tensor | None = None, total: int | None = None) -> torch.Tensor:
        """(B|1, H, R, S) additive bias (0 / -inf, + ALiBi) for query rows ``rows`` of the last t of ``total``
        positions (default s) against the last s keys."""
        total = s if total is None else total
        q_pos = torch.arange(total - t, total, device=device) if rows is None else rows + (total - t)
        keys = torch.arange(total - s, total, device=device)
        allowed = torch.cat([p.allowed(q_pos[:, None], keys[None, :])[None].expand(h1 - h0, -1, -1)
                             for h0, h1, p in self.groups])[None]  # (1, H, R, S)
        if attention_mask is not None:
            allowed = allowed & (attention_mask.bool()[:, None, None, :] | (q_pos[:, None] == keys[None, :]))
        bias = torch.zeros(allowed.shape, device=device).masked_fill(~allowed, float("-inf"))
        if self.position == "alibi":
            bias = bias + self.alibi_slopes.view(1, -1, 1, 1) * (keys[None, :] - q_pos[:, None]).float()
        return bias

    def _rows(self, q, k, v, pattern, attention_mask, h0, h1, total: int) -> torch.Tensor:  # noqa: ANN001
        t, s = q.shape[-2], k.shape[-2]
        q_pos, keys = (torch.arange(total - t, total, device=q.device), torch.arange(total - s, total, device=q.device))
        allowed = pattern.allowed(q_pos[:, None], keys[None, :])[None, None]  # (1, 1, T, S)
        if attention_mask is not None:
            allowed = allowed & (attention_mask.bool()[:, None, None, :] | (q_pos[:, None] == keys[None, :]))
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
        slopes = self._slopes(h0, h1)
        if slopes is not None:
            bias = bias + (slopes.view(1, -1, 1, 1) * (keys[None, :] - q_pos[:, None]).float()).to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

    def _static_stats(self, q: torch.Tensor, k: torch.Tensor, attention_mask: torch.Tensor | None,
                      total: int) -> dict[str, torch.Tensor]:
        t, s = q.shape[-2], k.shape[-2]
        rows = torch.linspace(0, t - 1, min(t, MAX_QUERIES), device=q.device).round().long().unique()
        bias = self._row_bias(t, s, attention_mask, q.device, rows, total)
        stats = sparsity_stats(q[:, :, rows], k, bias)
        if self.last_density is not None:
            stats["density"] = self.last_density
        return stats

    # ---- lsh ------------------------------------------------------------------------------------
    def _lsh(self, q: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        t = q.shape[-2]
        y, plan, pairs = lsh_attention(q, v, self.rotations, self.sparse.chunk_size, self.causal, attention_mask)
        self.last_plan = plan
        self.last_density = (pairs / full_pairs(t, self.causal)).detach().float()
        if self.record_stats:
            with torch.no_grad():
                keys = F.normalize(q, dim=-1)
                rows = torch.linspace(0, t - 1, min(t, MAX_QUERIES), device=q.device).round().long().unique()
                allowed = lsh_rows(plan, rows, self.causal)  # (B, H, R, T)
                bias = torch.zeros(allowed.shape, device=q.device).masked_fill(~allowed, float("-inf"))
                stats = sparsity_stats(q[:, :, rows], keys, bias)
                stats["density"] = self.last_density
                stats["lsh_balance"] = lsh_bucket_balance(plan, self.sparse.n_buckets)
                stats["lsh_recall"] = lsh_recall(q, keys, plan, rows, self.causal, TOP_K)
            self.last_stats = stats
        return y


def make_attention(
    kind: str,
    sparse: SparseAttentionConfig,
    layer: int,
    d_model: int,
    n_heads: int,
    n_kv_heads: int | None = None,
    **kwargs,
) -> nn.Module:
    """``SelfAttention`` for kind="dense", else ``SparseSelfAttention``; kwargs as SelfAttention's."""
    if kind == "dense":
        return SelfAttention(d_model, n_heads, n_kv_heads, **kwargs)
    return SparseSelfAttention(d_model, n_heads, n_kv_heads, kind=kind, sparse=sparse, layer=layer, **kwargs)
