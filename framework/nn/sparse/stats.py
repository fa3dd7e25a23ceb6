"""Structural and LSH statistics: density, effective receptive field, bucket balance, LSH recall."""
from __future__ import annotations

import math

import torch

from .base import SparsePattern, full_pairs
from .lsh import LSHPlan


def density(pattern: SparsePattern, t: int) -> float:
    """Pairs the kernel computes / pairs of full attention (t(t+1)/2 causal, t^2 bidirectional)."""
    return pattern.layout(t).pairs / full_pairs(t, pattern.causal)


@torch.no_grad()
def receptive_field(layers: list[list[tuple[int, int, SparsePattern]]], t: int, query: int | None = None) -> int:
    """Positions that can reach ``query`` (default: the last) through all layers, any head: the effective
    receptive field after L layers. Walks the block layouts backwards, O(L * t * K)."""
    query = t - 1 if query is None else query
    reach = torch.zeros(t, dtype=torch.bool)
    reach[query] = True
    for groups in reversed(layers):
        nxt = reach.clone()  # residual connection: a position always reaches itself
        for _, _, pattern in groups:
            lay = pattern.layout(t)
            nqb, bs, width = lay.mask.shape
            rows = lay.qperm if lay.qperm is not None else torch.arange(nqb * bs)
            active = torch.zeros(nqb * bs, dtype=torch.bool)
            active[rows < t] = reach[rows[rows < t]]
            hit = lay.mask & active.view(nqb, bs, 1)  # (NQB, BS, K)
            keys = lay.index[:, None, :].expand_as(hit)[hit]
            nxt[keys] = True
            for g in lay.global_rows.tolist():
                if reach[g]:
                    nxt |= pattern.allowed(torch.tensor([g])[:, None], torch.arange(t)[None, :])[0]
        reach = nxt
    return int(reach.sum())


def lsh_rows(plan: LSHPlan, rows: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, H, R, T) bool: keys each sampled query meets in any round (+ itself when alone)."""
    t = plan.t
    cid = plan.chunk_of[..., :t]  # (B, H, NR, T)
    diff = cid[..., None, :] - cid[..., rows, None]  # (B, H, NR, R, T)
    meet = ((diff == 0) | (diff == -1)).any(2)  # (B, H, R, T)
    keys = torch.arange(t, device=cid.device)
    own = rows[:, None] == keys[None, :]
    meet = meet & ~own
    if causal:
        meet = meet & (keys[None, :] <= rows[:, None])
    alone = ~meet.any(-1, keepdim=True)
    return meet | (alone & own)


@torch.no_grad()
def lsh_bucket_balance(plan: LSHPlan, n_buckets: int) -> torch.Tensor:
    """Normalised entropy of bucket sizes (1 = perfectly even), averaged over batch, heads and rounds."""
    counts = torch.nn.functional.one_hot(plan.buckets, n_buckets).sum(-2).float()  # (B, H, NR, NB)
    p = counts / counts.sum(-1, keepdim=True)
    ent = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)
    return (ent / math.log(n_buckets)).mean()


@torch.no_grad()
def lsh_recall(
    q: torch.Tensor, keys: torch.Tensor, plan: LSHPlan, rows: torch.Tensor, causal: bool, top_k: int
) -> torch.Tensor:
    """Share of each sampled query's true top-k keys (by dense score, itself excluded) that LSH attends,
    on the first sequence. q, keys: (B, H, T, D); rows: (R,) query positions."""
    t = q.shape[-2]
    pos = torch.arange(t, device=q.device)
    if causal:
        rows = rows[rows >= top_k]  # enough earlier keys for a top-k
    if len(rows) == 0:
        return torch.tensor(float("nan"))
    scores = q[:1, :, rows].float() @ keys[:1].float().transpose(-1, -2)  # (1, H, R, T)
    visible = pos[None, :] != rows[:, None]
    if causal:
        visible = visible & (pos[None, :] <= rows[:, None])
    top = scores.masked_fill(~visible, float("-inf")).topk(top_k, dim=-1).indices  # (1, H, R, k)
    first = LSHPlan(plan.buckets[:1], plan.perm[:1], plan.chunk_of[:1], plan.chunk, plan.t)
    met = lsh_rows(first, rows, causal)  # (1, H, R, T)
    return met.gather(-1, top).float().mean()
