"""MoE routers: which tokens each expert computes, grouped contiguously by expert.

Both routers return a ``Routing``: the assignments that will be computed, sorted by expert (so each
expert runs once on a contiguous slice), their gate weights, and what the statistics need.
No Python loop over tokens: one sort (token choice) or one top-k per expert (expert choice).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass
class Routing:
    """Assignments to compute, grouped by expert (expert 0's first, then expert 1's, ...).

    token_idx: (M,) token of each computed assignment; gate: (M,) its weight;
    counts: (E,) computed assignments per expert (sum M), i.e. after capacity;
    requested: (E,) assignments the router asked for per expert, before capacity (valid tokens only);
    topk_experts: (N, k) chosen experts per token (token choice) or None.
    """

    token_idx: torch.Tensor
    gate: torch.Tensor
    counts: torch.Tensor
    requested: torch.Tensor
    dropped_frac: torch.Tensor
    topk_experts: torch.Tensor | None = None


def capacity(n_tokens: int, top_k: int, n_experts: int, factor: float) -> int:
    """Most assignments one expert computes: ceil(factor * tokens * k / E), at least 1."""
    return max(1, math.ceil(factor * n_tokens * top_k / n_experts))


class Router(nn.Module):
    """Linear scores of each token for each expert; optional multiplicative jitter while training."""

    def __init__(self, d_model: int, n_experts: int, jitter: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Linear(d_model, n_experts, bias=False)
        self.jitter = jitter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C) -> router logits (N, E) in float32 (softmax and z-loss want the precision)."""
        if self.training and self.jitter > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        return self.weight(x).float()


def token_choice(
    logits: torch.Tensor,
    top_k: int,
    softmax_order: Literal["before_topk", "after_topk"],
    capacity_limit: int | None,
    valid: torch.Tensor | None = None,
) -> Routing:
    """Each token picks its top-k experts. logits: (N, E); valid: (N,) bool, False = padding (never routed).

    With ``capacity_limit`` an expert computes at most that many assignments: first choices before
    second choices, then earlier tokens first (GShard's priority); the rest are dropped.
    """
    n, e = logits.shape
    if softmax_order == "before_topk":  # Switch: gate = full-softmax probability of the chosen expert
        gate, experts = logits.softmax(-1).topk(top_k, dim=-1)  # (N, k)
    else:  # Mixtral: softmax over the chosen logits only (gates of a token sum to 1)
        top_logits, experts = logits.topk(top_k, dim=-1)
        gate = top_logits.softmax(-1)
    flat = experts.reshape(-1)  # (N*k,) assignment a = token * k + slot
    if valid is not None:  # padding goes to bucket E, which sorts last and is never computed
        flat = flat.masked_fill(~valid.repeat_interleave(top_k), e)
    device = logits.device
    slot = torch.arange(top_k, device=device).repeat(n)
    token = torch.arange(n, device=device).repeat_interleave(top_k)
    order = ((flat * top_k + slot) * n + token).argsort()  # by expert, then slot, then token
    requested = torch.bincount(flat, minlength=e + 1)[:e]  # (E,)
    n_requested = requested.sum()
    if capacity_limit is None:
        order = order[: int(n_requested)]
        counts = requested
    else:
        sorted_expert = flat[order]
        starts = torch.cat([requested.cumsum(0) - requested, n_requested.view(1)])  # (E+1,) first slot per expert
        position = torch.arange(n * top_k, device=device) - starts[sorted_expert]  # rank in its expert's queue
        order = order[(position < capacity_limit) & (sorted_expert < e)]
        counts = requested.clamp(max=capacity_limit)
    dropped = 1.0 - counts.sum() / n_requested.clamp(min=1)
    return Routing(
        token_idx=order // top_k, gate=gate.reshape(-1)[order], counts=counts, requested=requested,
        dropped_frac=dropped.float(), topk_experts=experts,
    )


def expert_choice(logits: torch.Tensor, capacity_limit: int, valid: torch.Tensor | None = None) -> Routing:
    """Each expert picks its ``capacity_limit`` highest-probability tokens (Zhou et al. 2022).

    logits: (N, E). A token may be picked by several experts or by none (dropped: it passes through
    the residual). Gate = the token's softmax probability for that expert.
    """
    n, e = logits.shape
    probs = logits.softmax(-1)  # (N, E)
    n_valid = n if valid is None else int(valid.sum())
    if valid is not None:
        probs = probs.masked_fill(~valid[:, None], -1.0)  # padding is never picked
    c = min(capacity_limit, n_valid)
    gate, tokens = probs.t().topk(c, dim=-1)  # (E, C) each expert's tokens, already grouped by expert
    token_idx = tokens.reshape(-1)
    picked = torch.zeros(n, dtype=torch.bool, device=logits.device).index_fill_(0, token_idx, True)
    counts = torch.full((e,), c, dtype=torch.long, device=logits.device)
    dropped = 1.0 - picked.sum() / max(n_valid, 1)
    return Routing(token_idx=token_idx, gate=gate.reshape(-1), counts=counts, requested=counts,
                   dropped_frac=dropped.float())
