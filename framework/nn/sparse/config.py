"""SparseAttentionConfig: the options of every sparse attention kind, and the per-layer pattern builder."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from framework.config_schema import check

from .base import SparsePattern
from .bigbird import BigBird
from .blocked import SparseKernel
from .factorized import Fixed, Strided
from .longformer import Longformer
from .window import SlidingWindow

SparseKind = Literal["sliding_window", "strided", "fixed", "longformer", "bigbird", "lsh"]
SPARSE_KINDS: tuple[str, ...] = ("sliding_window", "strided", "fixed", "longformer", "bigbird", "lsh")
AttentionKind = Literal["dense", "sliding_window", "strided", "fixed", "longformer", "bigbird", "lsh"]


@dataclass
class SparseAttentionConfig:
    window: int = 64          # local window: query i sees keys j with |i - j| < window (j <= i when causal)
    block_size: int = 32      # query block of the blocked kernel; unit of bigbird's random blocks
    dilation: int = 1         # longformer: every dilation-th key inside the window (reach window * dilation)
    n_global: int = 0         # longformer/bigbird: the first n_global positions are global tokens
    n_random: int = 2         # bigbird: random key blocks per query block (seeded, fixed per layer)
    stride: int = 32          # strided/fixed (Sparse Transformer): stride l
    n_summary: int = 4        # fixed: summary columns per stride block (c)
    factorize: Literal["heads", "layers"] = "heads"  # strided/fixed: halves split across heads or alternate layers
    n_hashes: int = 2         # lsh: hash rounds
    n_buckets: int = 16       # lsh: buckets per round (even)
    chunk_size: int = 32      # lsh: chunk length after sorting by bucket
    seed: int = 0             # bigbird random blocks and lsh rotations (layer i uses seed + i)
    kernel: SparseKernel = "auto"  # static kinds: auto = flash_cpu on CPU, flex (FlexAttention) on CUDA; or math

    def __post_init__(self) -> None:
        for name in ("window", "block_size", "dilation", "stride", "n_summary", "n_hashes", "chunk_size"):
            check(getattr(self, name) >= 1, f"sparse.{name}", f"must be >= 1, got {getattr(self, name)}")
        for name in ("n_global", "n_random"):
            check(getattr(self, name) >= 0, f"sparse.{name}", f"must be >= 0, got {getattr(self, name)}")
        check(self.n_buckets >= 2 and self.n_buckets % 2 == 0, "sparse.n_buckets",
              f"must be even and >= 2 (angular LSH uses [xR, -xR]), got {self.n_buckets}")
        check(self.n_summary <= self.stride, "sparse.n_summary",
              f"must be <= sparse.stride ({self.stride}), got {self.n_summary}")


def check_attention(kind: str, sparse: SparseAttentionConfig, n_heads: int, position: str) -> None:
    """Cross-field rules between the attention kind, its sparse options and the host model."""
    if kind == "bigbird":
        check(sparse.window % sparse.block_size == 0, "sparse.block_size",
              f"bigbird needs block_size to divide window ({sparse.window}), got {sparse.block_size}")
    if kind in ("strided", "fixed") and sparse.factorize == "heads":
        check(n_heads % 2 == 0, "sparse.factorize", f"'heads' splits the two halves over heads: n_heads ({n_heads}) must be even")
    if kind == "lsh":
        check(position != "alibi", "position", "lsh attention does not support alibi (use rope, learned or sinusoidal)")


HeadGroup = tuple[int, int, SparsePattern]  # heads [h0, h1) use the pattern


def build_patterns(
    kind: str, cfg: SparseAttentionConfig, layer: int, n_heads: int, causal: bool, max_seq_len: int
) -> list[HeadGroup]:
    """The pattern(s) of one layer as head groups; factorised kinds give two halves (heads or layers)."""
    bs = cfg.block_size
    if kind == "sliding_window":
        return [(0, n_heads, SlidingWindow(cfg.window, causal, bs, cfg.dilation))]
    if kind == "longformer":
        return [(0, n_heads, Longformer(cfg.window, cfg.n_global, causal, bs, cfg.dilation))]
    if kind == "bigbird":
        return [(0, n_heads, BigBird(cfg.window, cfg.n_global, cfg.n_random, max_seq_len, causal, bs, cfg.seed + layer))]
    if kind in ("strided", "fixed"):
        if kind == "strided":
            halves: list[SparsePattern] = [Strided(cfg.stride, "local", causal, bs), Strided(cfg.stride, "strided", causal, bs)]
        else:
            halves = [Fixed(cfg.stride, cfg.n_summary, "block", causal, bs), Fixed(cfg.stride, cfg.n_summary, "summary", causal, bs)]
        if cfg.factorize == "layers":
            return [(0, n_heads, halves[layer % 2])]
        return [(0, n_heads // 2, halves[0]), (n_heads // 2, n_heads, halves[1])]
    raise ValueError(f"attention kind {kind!r} has no static pattern; allowed: {', '.join(SPARSE_KINDS)}")
