"""``scaled_dot_product_attention`` with one CPU-specific precision rule.

On CPU, PyTorch's fused flash-attention kernels in bf16/fp16 carry a large fixed cost per block: for small
heads and short sequences the fp32 kernel is faster, forward + backward, despite moving twice the bytes.
Measured on this project's 2-core CPU (torch 2.13, causal, fp32-kernel speed-up over the bf16 kernel):

    (B, H, T, D)        fp32 / bf16      (B, H, T, D)         fp32 / bf16
    (16, 4, 64, 16)     5.5x             (2, 8, 1024, 32)     0.88x
    (8, 16, 128, 16)    4.5x             (1, 8, 2048, 32)     0.91x
    (8, 8, 256, 32)     1.6x             (8, 4, 256, 64)      0.97x
    (4, 8, 512, 32)     1.3x             (1, 12, 1024, 64)    0.63x
    (8, 8, 256, 48)     1.3x             (2, 16, 2048, 128)   0.46x

So half-precision attention on CPU runs in fp32 when head_dim < 64 and the key length is <= 512 (the
output is cast back); everything else, and every other device, goes to SDPA unchanged. The rule is
deterministic (no timing at run time), so results do not depend on machine load.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

FP32_MAX_HEAD_DIM = 63   # head dims up to this take the fp32 kernel on CPU ...
FP32_MAX_KEYS = 512      # ... when attending to at most this many keys


def fp32_is_faster(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether half-precision q, k (B, H, T, D) attend faster in fp32 (CPU only; see the table above)."""
    return (
        q.device.type == "cpu"
        and q.dtype in (torch.bfloat16, torch.float16)
        and q.shape[-1] <= FP32_MAX_HEAD_DIM
        and k.shape[-2] <= FP32_MAX_KEYS
    )


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, ...)``, in fp32 where that is faster (``fp32_is_faster``)."""
    kwargs = dict(dropout_p=dropout_p, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    if not fp32_is_faster(q, k):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, **kwargs)
    if attn_mask is not None and attn_mask.is_floating_point():
        attn_mask = attn_mask.float()
    with torch.autocast("cpu", enabled=False):  # autocast would cast the fp32 inputs straight back
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask, **kwargs)
    return out.to(q.dtype)
