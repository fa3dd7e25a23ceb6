"""Dense masked attention: the O(t^2) reference the sparse kernels are tested against (never used to train)."""
from __future__ import annotations

import math

import torch


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor,
    key_padding: torch.Tensor | None = None, alibi_slopes: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) masked by ``allowed`` (T, S) or (B, H, T, S)) v; rows with no allowed key give 0.

    key_padding (B, S): 1 = token, 0 = padding (hidden except for a query's own position)."""
    t, s_len = q.shape[-2], k.shape[-2]
    acc = torch.promote_types(q.dtype, torch.float32)
    scores = (q @ k.transpose(-1, -2)).to(acc) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    m = allowed
    if key_padding is not None:
        own = torch.arange(t)[:, None] + (s_len - t) == torch.arange(s_len)[None, :]
        m = m & (key_padding.bool()[:, None, None, :] | own)
    if alibi_slopes is not None:
        dist = (torch.arange(s_len)[None, :] - torch.arange(s_len - t, s_len)[:, None]).to(acc)
        scores = scores + alibi_slopes.view(1, -1, 1, 1) * dist
    scores = scores.masked_fill(~m, float("-inf"))
    p = torch.nan_to_num(scores.softmax(-1), nan=0.0)
    return (p.to(v.dtype) @ v)
