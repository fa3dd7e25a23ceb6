"""Reusable building blocks for plugins: attention, feed-forward, norms, positions, KV cache.

Plugins import these instead of each other, so an idea is written once.
"""
from .attention import SelfAttention
from .feedforward import GatedMLP, MLP, make_feedforward
from .kv_cache import KVCache
from .norms import make_norm
from .positions import RotaryEmbedding, alibi_bias, alibi_slopes, sinusoidal_table

__all__ = [
    "GatedMLP",
    "KVCache",
    "MLP",
    "RotaryEmbedding",
    "SelfAttention",
    "alibi_bias",
    "alibi_slopes",
    "make_feedforward",
    "make_norm",
    "sinusoidal_table",
]
