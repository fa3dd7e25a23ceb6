"""Reformer LSH attention (Kitaev et al. 2020): shared query-key vectors, angular LSH with ``n_hashes``
rounds of random rotations, sort by (bucket, position), attend within each chunk and to the previous
chunk, never to oneself unless nothing else is visible.

Rounds are combined so the result equals one softmax over the union of the keys a query meets in any
round: each (query, key) score is lowered by log(number of rounds in which the pair meets), and the
per-round outputs are mixed with weights softmax(log-sum-exp of each round). Cost: O(n_hashes * t * chunk)
plus an O(t log t) sort, never O(t^2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


def make_rotations(head_dim: int, n_buckets: int, n_hashes: int, seed: int) -> torch.Tensor:
    """(n_hashes, D, n_buckets / 2) random rotations; round r depends only on (seed, r), so more rounds
    add to, and never change, the earlier ones."""
    rots = []
    for r in range(n_hashes):
        g = torch.Generator().manual_seed(seed * 7919 + r)
        rots.append(torch.randn(head_dim, n_buckets // 2, generator=g))
    return torch.stack(rots)


def hash_vectors(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Angular LSH: bucket = argmax([xR, -xR]). x (B, H, T, D) -> (B, H, R, T) int64 in [0, n_buckets)."""
    proj = torch.einsum("bhtd,rdn->bhrtn", x.float(), rotations.float())  # (B, H, R, T, NB/2)
    return torch.cat([proj, -proj], dim=-1).argmax(-1)


@dataclass
class LSHPlan:
    """Where each position lands in each round. perm: (B, H, R, TP) sorted slot -> position (TP = t padded
    to a multiple of the chunk; positions >= t are padding); chunk_of: (B, H, R, TP) position -> chunk."""

    buckets: torch.Tensor
    perm: torch.Tensor
    chunk_of: torch.Tensor
    chunk: int
    t: int


def plan(qk: torch.Tensor, rotations: torch.Tensor, chunk: int) -> LSHPlan:
    b, h, t, _ = qk.shape
    n_buckets = 2 * rotations.shape[-1]
    tp = -(-t // chunk) * chunk
    buckets = hash_vectors(qk, rotations)  # (B, H, R, T)
    # Padding positions go to an extra last bucket, so they sort to the end.
    padded = F.pad(buckets, (0, tp - t), value=n_buckets)
    pos = torch.arange(tp, device=qk.device)
    perm = (padded * tp + pos).argsort(-1)  # (B, H, R, TP) stable order: bucket, then position
    slot_of = perm.argsort(-1)  # position -> sorted slot
    return LSHPlan(buckets, perm, torch.div(slot_of, chunk, rounding_mode="floor"), chunk, t)


def _look_back(x: torch.Tensor) -> torch.Tensor:
    """(..., NCH, C, *) -> (..., NCH, 2C, *): each chunk followed by the previous chunk (none for the first)."""
    prev = torch.cat([torch.full_like(x[..., :1, :, :], -1) if x.dtype == torch.long else torch.zeros_like(x[..., :1, :, :]),
                      x[..., :-1, :, :]], dim=-3)
    return torch.cat([x, prev], dim=-2)


def lsh_attention(
    qk: torch.Tensor, v: torch.Tensor, rotations: torch.Tensor, chunk: int, causal: bool,
    key_padding: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LSHPlan, torch.Tensor]:
    """qk, v: (B, H, T, D) (keys are the unit-normalised qk). Returns (out (B, H, T, D), plan, pairs) where
    ``pairs`` is the number of distinct (query, key) pairs attended (for the density metric)."""
    b, h, t, d = qk.shape
    p = plan(qk, rotations, chunk)
    r, tp = p.perm.shape[2], p.perm.shape[3]
    nch = tp // chunk
    k = F.normalize(qk, dim=-1)
    qk_p, k_p, v_p = (F.pad(x, (0, 0, 0, tp - t)) for x in (qk, k, v))  # (B, H, TP, D)

    def sort(x: torch.Tensor) -> torch.Tensor:  # (B, H, TP, D) -> (B, H, R, NCH, C, D) in sorted order
        idx = p.perm.reshape(b, h, r * tp, 1).expand(-1, -1, -1, d)
        return x.gather(2, idx).view(b, h, r, nch, chunk, d)

    q_s, k_s, v_s = sort(qk_p), _look_back(sort(k_p)), _look_back(sort(v_p))  # keys: (B, H, R, NCH, 2C, D)
    q_pos = p.perm.view(b, h, r, nch, chunk)  # (B, H, R, NCH, C)
    k_pos = _look_back(q_pos[..., None]).squeeze(-1)  # (B, H, R, NCH, 2C); -1 = no key
    qp, kp = q_pos[..., :, None], k_pos[..., None, :]  # (..., C, 1), (..., 1, 2C)
    ok = (kp >= 0) & (kp < t) & (qp < t) & (kp != qp)
    if causal:
        ok = ok & (kp <= qp)
    if key_padding is not None:
        ok = ok & _keep_at(key_padding, k_pos, tp)[..., None, :]
    with torch.no_grad():
        count = _counts(p, qp.expand_as(ok), kp.expand_as(ok))  # rounds in which each pair meets
    acc = torch.promote_types(qk.dtype, torch.float32)
    scores = (q_s @ k_s.transpose(-1, -2)).to(acc) / math.sqrt(d)  # (B, H, R, NCH, C, 2C)
    scores = scores - count.clamp(min=1).to(acc).log()
    scores = scores.masked_fill(~ok, float("-inf"))
    mx = scores.amax(-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx)).detach()
    e = torch.exp(scores - mx)
    denom = e.sum(-1, keepdim=True)
    out_s = (e.to(v.dtype) @ v_s) / denom.clamp_min(1e-30).to(v.dtype)  # (B, H, R, NCH, C, D)
    lse = torch.where(denom > 0, mx + denom.clamp_min(1e-30).log(), float("-inf")).view(b, h, r, tp)
    # Back to position order, then mix the rounds.
    slot_of = p.perm.argsort(-1)  # (B, H, R, TP)
    out_r = out_s.view(b, h, r, tp, d).gather(3, slot_of[..., None].expand(-1, -1, -1, -1, d))
    lse_r = lse.gather(3, slot_of)  # (B, H, R, TP)
    total = torch.logsumexp(lse_r, dim=2, keepdim=True)  # (B, H, 1, TP)
    alone = ~torch.isfinite(total)  # no visible key in any round: attend to oneself
    w = torch.where(alone, torch.zeros_like(lse_r), torch.exp(lse_r - torch.where(alone, 0.0, total)))
    out = (w[..., None] * out_r.to(acc)).sum(2)[:, :, :t]  # (B, H, T, D)
    out = torch.where(alone[:, :, 0, :t, None], v.to(acc), out).to(v.dtype)
    with torch.no_grad():
        pairs = (ok.float() / count.clamp(min=1).float()).sum() / (b * h) + alone[:, :, 0, :t].sum() / (b * h)
    return out, p, pairs


def _keep_at(key_padding: torch.Tensor, k_pos: torch.Tensor, tp: int) -> torch.Tensor:
    """key_padding (B, T) gathered at k_pos (B, H, R, NCH, 2C) (-1 and padding -> False)."""
    b, h = k_pos.shape[:2]
    keep = F.pad(key_padding.bool(), (0, tp - key_padding.shape[1]))  # (B, TP)
    flat = k_pos.clamp(min=0).reshape(b, -1)
    return keep.gather(1, flat).view(k_pos.shape) & (k_pos >= 0)


def _counts(p: LSHPlan, qp: torch.Tensor, kp: torch.Tensor) -> torch.Tensor:
    """Rounds in which key kp lies in query qp's chunk or the previous one; qp, kp (B, H, ...) positions."""
    b, h = qp.shape[:2]
    count = torch.zeros(qp.shape, dtype=torch.long, device=qp.device)
    for j in range(p.chunk_of.shape[2]):
        cid = p.chunk_of[:, :, j]  # (B, H, TP)
        cq = cid.gather(2, qp.clamp(min=0).reshape(b, h, -1)).view(qp.shape)
        ck = cid.gather(2, kp.clamp(min=0).reshape(b, h, -1)).view(kp.shape)
        diff = ck - cq
        count += ((diff == 0) | (diff == -1)).long()
    return count


def union_mask(p: LSHPlan, causal: bool) -> torch.Tensor:
    """(B, H, T, T) bool: the keys each query meets in any round (reference for tests; O(t^2))."""
    t = p.t
    cid = p.chunk_of[..., :t]  # (B, H, R, T)
    diff = cid[..., None, :] - cid[..., :, None]  # (B, H, R, Tq, Tk)
    meet = ((diff == 0) | (diff == -1)).any(2)
    pos = torch.arange(t, device=cid.device)
    meet = meet & (pos[:, None] != pos[None, :])
    if causal:
        meet = meet & (pos[None, :] <= pos[:, None])
    return meet
