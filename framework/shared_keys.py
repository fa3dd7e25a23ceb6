"""The config keys every architecture shares, and their rules, declared once.

``vocab_size``, ``d_model``, ``n_layers``, ``n_heads``, ``n_kv_heads``, ``d_ff``, ``dropout`` and
``max_seq_len`` mean the same in every plugin that has them, so one sweep varies them across
architectures. A config dataclass calls ``check_shared_keys(self)`` first in its ``__post_init__``.
"""
from __future__ import annotations

from typing import Any

from .config_schema import check

SHARED_KEYS: tuple[str, ...] = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "dropout",
                                "max_seq_len")


def check_shared_keys(cfg: Any, heads_used: bool = True) -> None:
    """Validate whichever shared keys ``cfg`` has (a plugin may lack some: an RNN has no heads). With
    ``heads_used=False`` (a stack without attention layers) the head counts need not divide d_model."""
    has = lambda name: hasattr(cfg, name)  # noqa: E731
    if has("vocab_size"):
        check(cfg.vocab_size >= 2, "vocab_size", f"must be >= 2, got {cfg.vocab_size}")
    for name in ("d_model", "n_layers", "n_heads", "max_seq_len"):
        if has(name):
            check(getattr(cfg, name) >= 1, name, f"must be >= 1, got {getattr(cfg, name)}")
    if has("n_kv_heads") and cfg.n_kv_heads is not None:
        check(cfg.n_kv_heads >= 1, "n_kv_heads", f"must be >= 1 or null, got {cfg.n_kv_heads}")
    if heads_used and has("n_heads") and has("d_model"):
        check(cfg.d_model % cfg.n_heads == 0, "d_model",
              f"d_model ({cfg.d_model}) must be divisible by n_heads ({cfg.n_heads})")
    if heads_used and has("n_kv_heads") and cfg.n_kv_heads is not None:
        check(cfg.n_kv_heads <= cfg.n_heads and cfg.n_heads % cfg.n_kv_heads == 0, "n_kv_heads",
              f"must divide n_heads ({cfg.n_heads}), got {cfg.n_kv_heads}")
    if has("d_ff") and cfg.d_ff is not None:
        check(cfg.d_ff >= 1, "d_ff", f"must be >= 1, got {cfg.d_ff}")
    if has("dropout"):
        check(0.0 <= cfg.dropout < 1.0, "dropout", f"must be in [0, 1), got {cfg.dropout}")
