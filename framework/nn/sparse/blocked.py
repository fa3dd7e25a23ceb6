"""Block-sparse attention kernel: each query block gathers only its candidate keys (``Layout``), so
memory and time grow as O(t * K) with K ~ block + window, never O(t^2).

A custom autograd function in the FlashAttention style: the forward keeps only the output and the
log-sum-exp per query; the backward recomputes the scores chunk by chunk. Query blocks are processed
in chunks whose score tensor holds about 1/8 of q's entries (at least ``MIN_CHUNK_ELEMS``): the
working memory of a chunk (scores, gathered keys/values, their gradients) then stays below q's size,
so the peak is a small multiple of the inputs, like dense SDPA's, and never O(t * K) at once.

On CPU, ``block_sparse_attention`` hands the same layout to PyTorch's fused flash-attention kernels
instead (``blocked_flash.py``, ~1.5x faster), on CUDA the pattern to FlexAttention (``flex.py``); this
unfused kernel serves any device (``kernel="math"``) and is the second implementation the tests hold both to.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch.nn import functional as F

from .base import Layout, SparsePattern

SparseKernel = Literal["auto", "flash_cpu", "flex", "math"]
MIN_CHUNK_ELEMS = 1 << 16  # score entries per chunk (B * H * blocks * BS * K) at the least


def _chunks(layout: Layout, b: int, h: int, d: int) -> list[tuple[int, int]]:
    nqb, width = layout.index.shape
    per_block = max(1, b * h * layout.block_size * width)
    budget = max(MIN_CHUNK_ELEMS, b * h * layout.t * d // 8)
    step = max(1, budget // per_block)
    return [(c, min(c + step, nqb)) for c in range(0, nqb, step)]


def _scores(
    qc: torch.Tensor, kc: torch.Tensor, bias: torch.Tensor, qpos: torch.Tensor, idx: torch.Tensor,
    keep: torch.Tensor | None, slopes: torch.Tensor | None, scale: float,
) -> torch.Tensor:
    """Masked scores (B, H, NC, BS, K) in fp32 (fp64 for fp64 inputs); qpos (NC, BS, 1) query positions.

    qc: (B, H, NC, BS, D); kc: (B, H, NC, K, D); bias: (NC, BS, K) additive mask (0 or -inf).
    3-D ``bmm`` on transposed views avoids the copies a 5-D ``matmul`` would make."""
    b, h, nc, bs, d = qc.shape
    width = kc.shape[-2]
    acc = torch.promote_types(qc.dtype, torch.float32)
    s = torch.bmm(qc.reshape(-1, bs, d), kc.reshape(-1, width, d).transpose(1, 2)).to(acc)  # (B*H*NC, BS, K)
    s = s.view(b, h, nc, bs, width).add_(bias)  # q arrives pre-scaled
    if keep is not None:
        # Padding keys are hidden, except a query's own position (as in dense SelfAttention).
        kk = keep[:, idx][:, None, :, None, :] | (qpos == idx[:, None, :])  # (B, 1, NC, BS, K)
        s = s.masked_fill_(~kk, float("-inf"))
    if slopes is not None:  # ALiBi: -slope * distance
        s = s.add_(slopes.view(1, -1, 1, 1, 1).to(acc) * (idx[:, None, :] - qpos).to(acc))
    return s


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """x (B, H, T, D) with n zero rows appended (no copy when n == 0)."""
    return F.pad(x, (0, 0, 0, n)) if n else x


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D), idx (NC, K) -> (B, H, NC, K, D); index_select beats advanced indexing here."""
    return x.index_select(2, idx.reshape(-1)).view(*x.shape[:2], *idx.shape, x.shape[-1])


def _keys(x: torch.Tensor, index: torch.Tensor, offset: int | None, c0: int, c1: int, bs: int) -> torch.Tensor:
    """Keys/values of query blocks [c0, c1): (B, H, NC, K, D). Regular (window) layouts slice one range and
    unfold it (a strided view, ~3x cheaper than a gather); others gather ``index``."""
    if offset is None:
        return _gather(x, index[c0:c1])
    t, width = x.shape[2], index.shape[1]
    lo, hi = c0 * bs + offset, (c1 - 1) * bs + offset + width  # key range of the chunk
    part = x[:, :, max(lo, 0) : min(hi, t)]
    part = F.pad(part, (0, 0, max(0, -lo), max(0, hi - t)))  # zero keys outside [0, t) are masked anyway
    return part.unfold(2, width, bs).transpose(-1, -2)  # (B, H, NC, K, D) view


def _accumulate_keys(
    dst: torch.Tensor, part: torch.Tensor, flat_index: torch.Tensor, offset: int | None, c0: int, bs: int
) -> None:
    """dst (B, H, T, D) += per-block key gradients part (B, H, NC, K, D) at their key positions.

    Window layouts (``offset`` set, K a multiple of the block size) add K/BS shifted contiguous slabs,
    which beats ``index_add_`` over NC*K rows; other layouts scatter with ``index_add_``."""
    b, h, nc, width, d = part.shape
    if offset is None or width % bs:
        dst.index_add_(2, flat_index, part.flatten(2, 3))
        return
    t = dst.shape[2]
    for j in range(width // bs):  # sub-block j of block c holds keys (c0 + c + j) * bs + offset + [0, bs)
        start = c0 * bs + offset + j * bs
        slab = part[:, :, :, j * bs : (j + 1) * bs].reshape(b, h, nc * bs, d)  # (B, H, NC*BS, D)
        lo, hi = max(start, 0), min(start + nc * bs, t)
        if hi > lo:
            dst[:, :, lo:hi] += slab[:, :, lo - start : hi - start]


def _bmm5(a: torch.Tensor, b: torch.Tensor, transpose_a: bool = False, transpose_b: bool = False) -> torch.Tensor:
    """Batched matmul of (B, H, NC, X, Y) tensors through 3-D bmm on transposed views."""
    lead = a.shape[:3]
    a3 = a.reshape(-1, *a.shape[3:])
    b3 = b.reshape(-1, *b.shape[3:])
    if transpose_a:
        a3 = a3.transpose(1, 2)
    if transpose_b:
        b3 = b3.transpose(1, 2)
    out = torch.bmm(a3, b3)
    return out.view(*lead, *out.shape[1:])


def _qpos(qperm: torch.Tensor | None, c0: int, c1: int, bs: int, device: torch.device) -> torch.Tensor:
    """(NC, BS, 1) query positions of blocks [c0, c1)."""
    if qperm is None:
        return torch.arange(c0 * bs, c1 * bs, device=device).view(c1 - c0, bs, 1)
    return qperm[c0 * bs : c1 * bs].view(c1 - c0, bs, 1)


def _store(dst: torch.Tensor, rows: torch.Tensor, c0: int, c1: int, bs: int, qperm: torch.Tensor | None) -> None:
    """Write block rows (B, H, NC, BS, D) of blocks [c0, c1) back to their positions in dst (B, H, T, D)."""
    t = dst.shape[2]
    e = min(c1 * bs, t)
    flat = rows.flatten(2, 3)[:, :, : e - c0 * bs]
    if qperm is None:
        dst[:, :, c0 * bs : e] = flat
    else:  # padding rows sit at the end of the order, past e
        dst.index_copy_(2, qperm[c0 * bs : e], flat.to(dst.dtype))


def _rows(
    x: torch.Tensor, c0: int, c1: int, bs: int, scale: float | None = None, qperm: torch.Tensor | None = None
) -> torch.Tensor:
    """Query blocks [c0, c1) of x (B, H, T, D) as (B, H, NC, BS, D), zero rows past t; chunk-sized copies
    only, so no whole-sequence temporary is ever made."""
    b, h, t, d = x.shape
    if qperm is not None:
        part = x.index_select(2, qperm[c0 * bs : c1 * bs].clamp(max=t - 1))
        part = part * scale if scale is not None else part
        return part.view(b, h, c1 - c0, bs, d)
    part = x[:, :, c0 * bs : min(c1 * bs, t)]
    if scale is not None:
        part = part * scale
    part = _pad(part, (c1 - c0) * bs - part.shape[2])
    return part.reshape(b, h, c1 - c0, bs, d)


class _BlockSparse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, index, bias, keep, slopes, scale, chunks, offset, qperm):  # noqa: ANN001
        b, h, t, d = q.shape
        bs = bias.shape[1]
        out = torch.empty_like(q)
        lse = q.new_empty(b, h, bias.shape[0], bs, dtype=torch.promote_types(q.dtype, torch.float32))
        for c0, c1 in chunks:
            idx = index[c0:c1]  # (NC, K)
            kc, vc = _keys(k, index, offset, c0, c1, bs), _keys(v, index, offset, c0, c1, bs)  # (B, H, NC, K, D)
            qpos = _qpos(qperm, c0, c1, bs, q.device)
            s = _scores(_rows(q, c0, c1, bs, scale, qperm), kc, bias[c0:c1], qpos, idx, keep, slopes, scale)
            mx = s.amax(-1, keepdim=True)
            mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))  # empty rows (padding past t)
            p = s.sub_(mx).exp_()  # in place: s is not needed again
            denom = p.sum(-1, keepdim=True)
            o = _bmm5(p.to(v.dtype), vc).div_(denom.clamp_min(1e-30).to(v.dtype))  # (B, H, NC, BS, D)
            _store(out, o, c0, c1, bs, qperm)
            # Empty rows get lse=+inf, so the backward's exp(s - lse) is 0 there.
            lse[:, :, c0:c1] = torch.where(denom > 0, mx + denom.clamp_min(1e-30).log(), float("inf")).squeeze(-1)
        ctx.save_for_backward(q, k, v, out, lse, index, bias, keep, slopes, qperm)
        ctx.scale, ctx.chunks, ctx.offset = scale, chunks, offset
        return out

    @staticmethod
    def backward(ctx, dout):  # noqa: ANN001
        q, k, v, out, lse, index, bias, keep, slopes, qperm = ctx.saved_tensors
        scale, chunks, offset = ctx.scale, ctx.chunks, ctx.offset
        b, h, t, d = q.shape
        bs = bias.shape[1]
        acc = lse.dtype
        dq = torch.empty(b, h, t, d, dtype=acc, device=q.device)
        dk = torch.zeros(b, h, t, d, dtype=acc, device=q.device)
        dv = torch.zeros(b, h, t, d, dtype=acc, device=q.device)
        for c0, c1 in chunks:
            idx = index[c0:c1]
            # Contiguous once: kc feeds two matmuls, and bmm would copy a strided window view each time.
            kc = _keys(k, index, offset, c0, c1, bs).contiguous()  # (B, H, NC, K, D)
            vc = _keys(v, index, offset, c0, c1, bs).contiguous()
            qc = _rows(q, c0, c1, bs, scale, qperm)  # (B, H, NC, BS, D), pre-scaled
            doc = _rows(dout, c0, c1, bs, None, qperm).to(acc)
            delta = (_rows(out, c0, c1, bs, None, qperm).to(acc) * doc).sum(-1)  # (B, H, NC, BS)
            s = _scores(qc, kc, bias[c0:c1], _qpos(qperm, c0, c1, bs, q.device), idx, keep, slopes, scale)
            p = s.sub_(lse[:, :, c0:c1, :, None]).exp_()  # (B, H, NC, BS, K)
            flat = idx.reshape(-1)
            _accumulate_keys(dv, _bmm5(p, doc, transpose_a=True), flat, offset, c0, bs)
            dp = _bmm5(doc, vc.to(acc), transpose_b=True)  # (B, H, NC, BS, K)
            ds = dp.sub_(delta[..., None]).mul_(p)  # d(scores); the scale is applied to dq, dk below
            _store(dq, _bmm5(ds, kc.to(acc)), c0, c1, bs, qperm)
            _accumulate_keys(dk, _bmm5(ds, qc.to(acc), transpose_a=True), flat, offset, c0, bs)  # qc holds q * scale
        return dq.mul_(scale).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None, None, None, None, None


def _dense_rows(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, pattern: SparsePattern,
    keep: torch.Tensor | None, slopes: torch.Tensor | None, scale: float,
) -> torch.Tensor:
    """Attention of the (few) global query rows over all keys: (B, H, G, D), O(g * t) time.

    Through SDPA with the rows' additive mask (no gradient): its fused kernels keep only the output and the
    log-sum-exp for backward, not the (B, H, G, T) probabilities an explicit softmax would."""
    t = k.shape[-2]
    keys = torch.arange(t, device=q.device)
    m = pattern.allowed(rows[:, None], keys[None, :])[None, None]  # (1, 1, G, T)
    if keep is not None:
        m = m & (keep[:, None, None, :] | (rows[:, None] == keys[None, :]))  # (B, 1, G, T)
    bias = torch.zeros(m.shape, dtype=q.dtype, device=q.device).masked_fill_(~m, float("-inf"))
    if slopes is not None:  # ALiBi: (B|1, H, G, T)
        bias = bias + (slopes.view(1, -1, 1, 1) * (keys[None, :] - rows[:, None])).to(q.dtype)
    return F.scaled_dot_product_attention(q[:, :, rows], k, v, attn_mask=bias, scale=scale)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: SparsePattern,
    key_padding: torch.Tensor | None = None,
    alibi_slopes: torch.Tensor | None = None,
    kernel: SparseKernel = "auto",
) -> torch.Tensor:
    """Sparse attention of q, k, v (B, H, T, D) under ``pattern``; key_padding (B, T) 1 = token, 0 = pad.
    Returns (B, H, T, D). ``kernel``: "flash_cpu" runs each chunk through PyTorch's fused CPU attention
    kernels (``blocked_flash.py``), "flex" the pattern through FlexAttention (``flex.py``: CUDA; on CPU
    inference only), "math" the unfused chunked kernel above (any device); "auto" picks flash_cpu on CPU,
    flex on CUDA."""
    from .blocked_flash import BlockSparseFlashCPU, flash_cpu_available
    from .flex import flex_available, flex_sparse_attention

    b, h, t, d = q.shape
    keep = key_padding.bool() if key_padding is not None else None
    if kernel == "flex" or (kernel == "auto" and flex_available(q)):
        return flex_sparse_attention(q, k, v, pattern, keep, alibi_slopes)
    layout = pattern.layout(t, q.device)
    scale = 1.0 / math.sqrt(d)
    if kernel == "flash_cpu" or (kernel == "auto" and flash_cpu_available(q)):
        template, interior = layout.shared_mask()
        out = BlockSparseFlashCPU.apply(q, k, v, layout.index, layout.mask, template, interior, keep, alibi_slopes,
                                        scale, layout.offset, layout.qperm)
    else:
        out = _BlockSparse.apply(q, k, v, layout.index, layout.bias, keep, alibi_slopes, scale,
                                 _chunks(layout, b, h, d), layout.offset, layout.qperm)
    if len(layout.global_rows):
        rows = layout.global_rows
        out = out.index_copy(2, rows, _dense_rows(q, k, v, rows, pattern, keep, alibi_slopes, scale).to(out.dtype))
    return out
