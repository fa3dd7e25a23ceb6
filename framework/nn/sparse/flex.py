"""Static sparse patterns through PyTorch's FlexAttention: the GPU path of ``block_sparse_attention``.

FlexAttention compiles one fused (Triton) kernel from a mask rule and skips the tiles a ``BlockMask`` marks empty,
so a pattern costs O(t * reach) on the GPU without the gathers of the blocked kernel. The pattern's own
``allowed(q, k)`` is the mask rule (evaluated elementwise under vmap, which is why patterns use comparisons and
table lookups only); padding and ALiBi, which change per batch, go into the score rule, so one ``BlockMask`` per
(pattern, length, device) is built once and reused. Global query rows need no separate pass: their tiles are full.

FlexAttention has no backward on CPU, and uncompiled it materialises every score: on CPU it serves inference only
(the tests hold it to the masked reference there); training on CPU uses the blocked kernels.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .base import SparsePattern

FLEX_BLOCK = 128  # FlexAttention's tile (its default): the unit a BlockMask skips
FLEX_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_compiled: Callable | None = None


def flex_available(q: torch.Tensor) -> bool:
    """True where "auto" should pick FlexAttention: CUDA tensors of a dtype its kernels take."""
    if q.device.type != "cuda" or q.dtype not in FLEX_DTYPES:
        return False
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def pattern_block_mask(pattern: SparsePattern, t: int, device: torch.device,
                       compile_mask: bool | None = None):  # noqa: ANN201 (BlockMask)
    """The pattern's (1, 1, t, t) ``BlockMask``, built once per length and device and kept on the pattern.
    ``compile_mask`` (default: on CUDA) builds it through a compiled kernel, which never holds the (t, t) mask (nor
    the int64 position differences the rule computes: 8 GB at 32k tokens) that the eager construction makes."""
    from torch.nn.attention.flex_attention import create_block_mask

    cache = pattern.__dict__.setdefault("_flex_masks", {})
    key = (t, str(device))
    if key not in cache:
        def mask_mod(b, h, q_idx, kv_idx):  # noqa: ANN001, ANN202 (FlexAttention's signature)
            return pattern.allowed(q_idx, kv_idx)

        compiled = torch.device(device).type == "cuda" if compile_mask is None else compile_mask
        cache[key] = create_block_mask(mask_mod, None, None, t, t, device=device, BLOCK_SIZE=FLEX_BLOCK,
                                       _compile=compiled)
    return cache[key]


def _score_mod(keep: torch.Tensor | None, slopes: torch.Tensor | None) -> Callable | None:
    """Padding keys hidden (except a query's own position, as in dense SelfAttention) and ALiBi's -slope * distance."""
    if keep is None and slopes is None:
        return None

    def score_mod(score, b, h, q_idx, kv_idx):  # noqa: ANN001, ANN202
        if slopes is not None:
            score = score + slopes[h] * (kv_idx - q_idx)
        if keep is not None:
            score = torch.where(keep[b, kv_idx] | (q_idx == kv_idx), score, -float("inf"))
        return score

    return score_mod


def flex_sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: SparsePattern,
    keep: torch.Tensor | None = None, alibi_slopes: torch.Tensor | None = None, compiled: bool = True,
) -> torch.Tensor:
    """Attention of q, k, v (B, H, T, D) under ``pattern``; keep (B, T) bool, True = token. ``compiled``: through
    ``torch.compile`` (the fused kernel; compiled once per shape); False runs FlexAttention's eager reference."""
    from torch.nn.attention.flex_attention import flex_attention

    global _compiled
    if torch.is_grad_enabled() and q.device.type == "cpu" and any(x.requires_grad for x in (q, k, v)):
        raise ValueError("sparse.kernel=flex: FlexAttention has no backward on CPU; "
                         "train on CPU with sparse.kernel=auto (flash_cpu) or math")
    slopes = None if alibi_slopes is None else alibi_slopes.to(torch.promote_types(q.dtype, torch.float32))
    block_mask = pattern_block_mask(pattern, q.shape[-2], q.device)
    if compiled and _compiled is None:
        _compiled = torch.compile(flex_attention)  # a new length recompiles once, then shapes turn dynamic
    attend = _compiled if compiled else flex_attention
    return attend(q, k, v, score_mod=_score_mod(keep, slopes), block_mask=block_mask)
