"""Sparse attention kinds (sliding window, Sparse Transformer strided/fixed, Longformer, BigBird, Reformer
LSH): patterns, the blocked sub-quadratic kernel, dense masked references, density and LSH statistics.

One file per pattern family (window, factorized, longformer, bigbird, lsh); ``blocked`` is the shared
kernel (``blocked_flash`` its CPU fast path through PyTorch's fused attention kernels, ``flex`` the CUDA path through FlexAttention), ``reference`` the O(t^2) test reference, ``stats`` the metrics' measurements.
"""
from .attention import SparseSelfAttention, make_attention
from .base import Layout, SparsePattern, full_pairs
from .bigbird import BigBird
from .blocked import block_sparse_attention
from .config import (
    SPARSE_KINDS,
    AttentionKind,
    SparseAttentionConfig,
    SparseKind,
    build_patterns,
    check_attention,
)
from .factorized import Fixed, Strided
from .longformer import Longformer
from .lsh import hash_vectors, lsh_attention, make_rotations, union_mask
from .reference import masked_attention
from .stats import density, lsh_bucket_balance, lsh_recall, receptive_field
from .window import SlidingWindow

__all__ = [
    "SPARSE_KINDS", "AttentionKind", "BigBird", "Fixed", "Layout", "Longformer", "SlidingWindow",
    "SparseAttentionConfig", "SparseKind", "SparsePattern", "SparseSelfAttention", "Strided",
    "block_sparse_attention", "build_patterns", "check_attention", "density", "full_pairs", "hash_vectors",
    "lsh_attention", "lsh_bucket_balance", "lsh_recall", "make_attention", "make_rotations", "masked_attention",
    "receptive_field", "union_mask",
]
