"""Block-sparse attention on CPU through PyTorch's fused flash-attention kernels, one chunk of query blocks
at a time.

The layout is the same as ``blocked.py``'s: query block c attends to its K gathered (or, for window
layouts, sliced) keys under the mask ``layout.mask[c]``. Each chunk is handed to
``aten._scaled_dot_product_flash_attention_for_cpu`` with the query blocks as the kernel's "heads"
dimension: q (B*H, NC, BS, D), keys (B*H, NC, K, D) — for window layouts an overlapping strided view,
no copy — and the mask (1, NC, BS, K). Its backward twin recomputes each chunk from the saved
log-sum-exp. The kernels fuse scores, softmax and both matmuls in cache-sized tiles, which makes this
path ~1.5x faster than the unfused blocked kernel at 16k tokens (``archlab bench sparse``); the working
memory per chunk is a few MB, so the peak stays that of the inputs and their gradients.
"""
from __future__ import annotations

import torch

from .blocked import _accumulate_keys, _keys, _qpos, _rows, _store

FLASH_CHUNK_ELEMS = 1 << 17  # query-row entries (B * H * NC * BS * D) per chunk: 512 rows of 4 heads x 64; larger
# chunks raise the kernels' working memory (1 << 18: 1.4x dense SDPA's peak at 16k) for no speed


def flash_cpu_available(q: torch.Tensor) -> bool:
    """The fused kernels exist for CPU tensors of floating dtypes (fp32, fp64, bf16, fp16)."""
    return q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _flash_chunks(nqb: int, b: int, h: int, bs: int, d: int) -> list[tuple[int, int]]:
    step = max(1, FLASH_CHUNK_ELEMS // max(1, b * h * bs * d))
    return [(c, min(c + step, nqb)) for c in range(0, nqb, step)]


def _chunk_bias(mask: torch.Tensor, template: torch.Tensor | None, interior: torch.Tensor, c0: int, c1: int,
                dtype: torch.dtype) -> torch.Tensor:
    """Additive (NC, BS, K) mask of blocks [c0, c1), or one broadcast (1, BS, K) when they all have the
    window template (``Layout.shared_mask``): no (NQB, BS, K) float table is ever built."""
    src = template[None] if template is not None and bool(interior[c0:c1].all()) else mask[c0:c1]
    return torch.zeros(src.shape, dtype=dtype, device=src.device).masked_fill_(~src, float("-inf"))


def _mask(bias: torch.Tensor, idx: torch.Tensor, qpos: torch.Tensor, keep: torch.Tensor | None,
          slopes: torch.Tensor | None, b: int, h: int) -> torch.Tensor:
    """Additive mask of a chunk for the kernel: (1, NC, BS, K), or (B*H, NC, BS, K) with padding or ALiBi.

    bias (NC | 1, BS, K) 0/-inf; idx (NC, K) key positions; qpos (NC, BS, 1) query positions."""
    m = bias[None, None]  # (1, 1, NC, BS, K), already in the mask dtype (ALiBi terms need fp64 for fp64 queries)
    if keep is not None:  # padding keys hidden, except a query's own position (as in dense SelfAttention)
        seen = keep[:, idx][:, None, :, None, :] | (qpos == idx[:, None, :])  # (B, 1, NC, BS, K)
        m = m.masked_fill(~seen, float("-inf"))
    if slopes is not None:  # ALiBi: -slope * distance
        m = m + slopes.view(1, -1, 1, 1, 1).to(m.dtype) * (idx[:, None, :] - qpos).to(m.dtype)
    if m.shape[0] == 1 and m.shape[1] == 1:
        return m[0]
    return m.expand(b, h, *m.shape[2:]).reshape(b * h, *m.shape[2:])


class BlockSparseFlashCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, index, mask, template, interior, keep, slopes, scale, offset, qperm):  # noqa: ANN001
        b, h, t, d = q.shape
        nqb, bs = mask.shape[0], mask.shape[1]
        out = torch.empty_like(q)
        lse = q.new_empty(b * h, nqb, bs, dtype=torch.promote_types(q.dtype, torch.float32))
        for c0, c1 in _flash_chunks(nqb, b, h, bs, d):
            nc = c1 - c0
            qc = _rows(q, c0, c1, bs, None, qperm).reshape(b * h, nc, bs, d)
            kc = _keys(k, index, offset, c0, c1, bs).flatten(0, 1)  # (B*H, NC, K, D), a view for windows
            vc = _keys(v, index, offset, c0, c1, bs).flatten(0, 1)
            bias = _chunk_bias(mask, template, interior, c0, c1, _mask_dtype(q))
            additive = _mask(bias, index[c0:c1], _qpos(qperm, c0, c1, bs, q.device), keep, slopes, b, h)
            o, lse_c = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                qc, kc, vc, 0.0, False, attn_mask=additive, scale=scale)
            _store(out, o.view(b, h, nc, bs, d), c0, c1, bs, qperm)
            lse[:, c0:c1] = lse_c
        ctx.save_for_backward(q, k, v, out, lse, index, mask, template, interior, keep, slopes, qperm)
        ctx.scale, ctx.offset = scale, offset
        return out

    @staticmethod
    def backward(ctx, dout):  # noqa: ANN001
        q, k, v, out, lse, index, mask, template, interior, keep, slopes, qperm = ctx.saved_tensors
        scale, offset = ctx.scale, ctx.offset
        b, h, t, d = q.shape
        nqb, bs = mask.shape[0], mask.shape[1]
        acc = torch.promote_types(q.dtype, torch.float32)
        dq = torch.empty(b, h, t, d, dtype=q.dtype, device=q.device)
        dk = torch.zeros(b, h, t, d, dtype=acc, device=q.device)
        dv = torch.zeros(b, h, t, d, dtype=acc, device=q.device)
        for c0, c1 in _flash_chunks(nqb, b, h, bs, d):
            nc = c1 - c0

            def rows(x: torch.Tensor) -> torch.Tensor:  # chunk-sized copies only where x is strided
                part = _rows(x, c0, c1, bs, None, qperm).reshape(b * h, nc, bs, d)
                return part if part.stride(-1) == 1 else part.contiguous()  # dout of a .sum(): stride 0

            kc = _keys(k, index, offset, c0, c1, bs).flatten(0, 1)
            vc = _keys(v, index, offset, c0, c1, bs).flatten(0, 1)
            bias = _chunk_bias(mask, template, interior, c0, c1, _mask_dtype(q))
            additive = _mask(bias, index[c0:c1], _qpos(qperm, c0, c1, bs, q.device), keep, slopes, b, h)
            gq, gk, gv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                rows(dout), rows(q), kc, vc, rows(out), lse[:, c0:c1], 0.0, False,
                attn_mask=additive, scale=scale)
            _store(dq, gq.view(b, h, nc, bs, d), c0, c1, bs, qperm)
            flat = index[c0:c1].reshape(-1)
            _accumulate_keys(dk, gk.view(b, h, nc, -1, d).to(acc), flat, offset, c0, bs)
            _accumulate_keys(dv, gv.view(b, h, nc, -1, d).to(acc), flat, offset, c0, bs)
        return dq, dk.to(k.dtype), dv.to(v.dtype), *([None] * 9)


def _mask_dtype(q: torch.Tensor) -> torch.dtype:
    """The kernel wants the mask in the query's dtype or fp32 (fp64 queries: fp64)."""
    return torch.float64 if q.dtype == torch.float64 else torch.float32
