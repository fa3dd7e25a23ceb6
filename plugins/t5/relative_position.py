"""T5's bucketed relative position bias (Raffel et al. 2020): one learned scalar per (bucket, head).

Near offsets get their own bucket; farther ones share logarithmically wider buckets up to
``max_distance``, beyond which everything falls in the last bucket. Bidirectional (encoder) attention
spends half the buckets on keys to the right; causal (decoder) attention only looks left.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def relative_position_bucket(
    relative_position: torch.Tensor, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128
) -> torch.Tensor:
    """Bucket ids in [0, num_buckets) for ``relative_position = key_pos - query_pos`` (long tensor)."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets  # keys to the right: upper half
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)  # future keys are masked anyway; they share bucket 0
    exact = num_buckets // 2
    # Log-spaced buckets for distances in [exact, max_distance), capped at the last bucket.
    log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (num_buckets - exact)).long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    """Additive attention bias (1, H, T, S) from bucketed key-query offsets; one instance per stack,
    shared by all its layers (as in T5)."""

    def __init__(self, n_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True) -> None:
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.embedding = nn.Embedding(num_buckets, n_heads)

    def buckets(self, q_len: int, k_len: int, offset: int = 0, device: torch.device | None = None) -> torch.Tensor:
        """(T, S) bucket ids; queries sit at positions offset .. offset+T-1, keys at 0 .. S-1."""
        q_pos = torch.arange(offset, offset + q_len, device=device)[:, None]
        k_pos = torch.arange(k_len, device=device)[None, :]
        return relative_position_bucket(k_pos - q_pos, self.bidirectional, self.num_buckets, self.max_distance)

    def forward(self, q_len: int, k_len: int, offset: int = 0) -> torch.Tensor:
        ids = self.buckets(q_len, k_len, offset, self.embedding.weight.device)
        return self.embedding(ids).permute(2, 0, 1)[None]  # (T, S, H) -> (1, H, T, S)

    def bucket_means(self) -> torch.Tensor:
        """(num_buckets,) bias per bucket averaged over heads: how the model uses each distance range."""
        return self.embedding.weight.detach().float().mean(-1)
