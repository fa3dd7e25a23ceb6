"""Attention token mixers: dense (MHA/GQA through SDPA) and every sparse kind of ``framework.nn.sparse``.

All take the stack's heads, positions (RoPE / ALiBi inside attention; learned / sinusoidal are added to
the embeddings by the stack) and decode with a KV cache (lsh: recomputation).
"""
from __future__ import annotations

from torch import nn

from framework.nn.sparse import SPARSE_KINDS, make_attention

from .spec import LayerContext, MixerSpec


def build_attention(ctx: LayerContext, kind: str = "dense") -> nn.Module:
    cfg = ctx.config
    return make_attention(
        kind, cfg.sparse, ctx.layer, cfg.d_model, cfg.n_heads, cfg.n_kv_heads,
        causal=True, bias=cfg.bias, dropout=cfg.dropout,
        position=cfg.position if cfg.position in ("rope", "alibi") else "none",
        max_seq_len=cfg.max_seq_len, rope_theta=cfg.rope_theta,
    )


def _sparse_builder(kind: str):
    return lambda ctx: build_attention(ctx, kind)


ATTENTION = MixerSpec(
    name="attention", role="token", family="attn", carries="kv", context_limited=True,
    description="dense softmax attention (MHA / GQA via n_kv_heads), SDPA kernels",
    build=build_attention,
)

_SPARSE_DESCRIPTIONS = {
    "sliding_window": "local attention: each query sees the last sparse.window keys (Mistral, Gemma local layers)",
    "strided": "Sparse Transformer strided pattern (local + every sparse.stride-th key)",
    "fixed": "Sparse Transformer fixed pattern (blocks + summary columns)",
    "longformer": "Longformer: sliding window + sparse.n_global global tokens",
    "bigbird": "BigBird: window + global tokens + random key blocks",
    "lsh": "Reformer LSH attention (shared QK, hashed buckets; no KV cache)",
}

SLIDING_WINDOW, STRIDED, FIXED, LONGFORMER, BIGBIRD, LSH = (
    MixerSpec(name=kind, role="token", family="attn", options="sparse", context_limited=True,
              carries="none" if kind == "lsh" else "kv", description=_SPARSE_DESCRIPTIONS[kind],
              build=_sparse_builder(kind))
    for kind in SPARSE_KINDS
)
