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
    probs: (N, E) router softmax over experts (a view of expert-major storage, see ``Router``);
    topk_experts: (N, k) chosen experts per token, best first (token choice) or None.
    """

    token_idx: torch.Tensor
    gate: torch.Tensor
    counts: torch.Tensor
    requested: torch.Tensor
    dropped_frac: torch.Tensor
    probs: torch.Tensor
    topk_experts: torch.Tensor | None = None


def capacity(n_tokens: int, top_k: int, n_experts: int, factor: float) -> int:
    """Most assignments one expert computes: ceil(factor * tokens * k / E), at least 1."""
    return max(1, math.ceil(factor * n_tokens * top_k / n_experts))


class Router(nn.Module):
    """Linear scores of each token for each expert; optional multiplicative jitter while training.

    The logits are computed expert-major, (E, N) in memory, and returned as their (N, E) transpose: every
    reduction over experts (softmax, top-k, logsumexp) then runs over the outer dimension, which PyTorch's
    CPU kernels vectorise along the tokens; over a contiguous last dimension of 8 experts the softmax is
    ~14x slower (``archlab bench moe`` profiles).
    """

    # framework/quantization keeps this Linear in full precision and reports why.
    full_precision_reason = "MoE router: routing decisions are sensitive to rounding (Switch's selective precision)"

    def __init__(self, d_model: int, n_experts: int, jitter: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Linear(d_model, n_experts, bias=False)
        self.jitter = jitter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C) -> router logits (N, E), computed in float32."""
        if self.training and self.jitter > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - self.jitter, 1.0 + self.jitter)
        # float32 even under autocast or in a bf16 model (Switch Transformer's selective precision: routing
        # decisions and the softmax are sensitive to rounding; the matmul is E x C x N, negligible).
        with torch.autocast(x.device.type, enabled=False):
            return (self.weight.weight.float() @ x.float().t()).t()  # (E, N) storage, (N, E) view


def top_experts(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (k, N) of the k largest of probs (E, N) along experts, best first; no gradient.
    k <= 4: k arg-max passes (each ~1/6 of one topk over a dimension of 8 on CPU)."""
    with torch.no_grad():
        if k > 4:
            return probs.topk(k, dim=0).indices
        p = probs.clone() if k > 1 else probs
        picks = []
        for j in range(k):
            best = p.max(0, keepdim=True).indices  # (1, N); max is ~10x faster than argmax here
            picks.append(best)
            if j + 1 < k:
                p.scatter_(0, best, float("-inf"))  # never picked again
        return torch.cat(picks)


@dataclass(frozen=True)
class Affinity:
    """How token choice scores and gates (defaults: plain softmax routing). ``score`` softmax or sigmoid;
    ``bias`` (E,) added for the choice only; ``groups``/``topk_groups``: group-limited choice; ``norm_topk``:
    sigmoid gates renormalised over the chosen; ``scale`` multiplies the gates."""

    score: Literal["softmax", "sigmoid"] = "softmax"
    bias: torch.Tensor | None = None
    groups: int = 1
    topk_groups: int = 1
    norm_topk: bool = True
    scale: float = 1.0


def _group_limited(choice: torch.Tensor, groups: int, keep: int) -> torch.Tensor:
    """choice (E, N) with the experts outside each token's ``keep`` best groups set to -inf; a group's score is
    the sum of its two best affinities (DeepSeek-V3)."""
    e, n = choice.shape
    grouped = choice.view(groups, e // groups, n)
    group_score = grouped.topk(min(2, e // groups), dim=1).values.sum(1)  # (G, N)
    chosen = torch.zeros_like(group_score, dtype=torch.bool).scatter_(0, group_score.topk(keep, dim=0).indices, True)
    return grouped.masked_fill(~chosen[:, None], float("-inf")).view(e, n)


def token_choice(
    logits: torch.Tensor,
    top_k: int,
    softmax_order: Literal["before_topk", "after_topk"],
    capacity_limit: int | None,
    valid: torch.Tensor | None = None,
    affinity: Affinity = Affinity(),
) -> Routing:
    """Each token picks its top-k experts. logits: (N, E); valid: (N,) bool, False = padding (never routed).

    Switch ("before_topk"): gate = the full-softmax probability of each chosen expert. Mixtral ("after_topk"):
    softmax over the chosen logits only, i.e. the chosen probabilities renormalised to sum to 1.
    With ``capacity_limit`` an expert computes at most that many assignments: first choices before
    second choices, then earlier tokens first (GShard's priority); the rest are dropped.
    DeepSeek-V3 (``affinity``): sigmoid scores, a balancing bias and group limits for the choice only, gates =
    the chosen scores (renormalised) times a routed scaling factor.
    """
    n, e = logits.shape
    a = affinity
    sigmoid = a.score == "sigmoid"
    # (E, N), expert-major (contiguous when the Router made the logits)
    scores_em = logits.t().sigmoid() if sigmoid else logits.t().softmax(0)
    choice = scores_em if a.bias is None else scores_em + a.bias.to(scores_em.dtype)[:, None]
    if a.groups > 1:
        choice = _group_limited(choice, a.groups, a.topk_groups)
    experts = top_experts(choice, top_k)  # (k, N)
    gate = scores_em.gather(0, experts)  # (k, N): the bias chooses, it never weighs
    if (softmax_order == "after_topk") if not sigmoid else a.norm_topk:
        gate = gate / (gate.sum(0, keepdim=True) + (1e-20 if sigmoid else 0.0))
    if a.scale != 1.0:
        gate = gate * a.scale
    # What the balance loss and statistics read as each token's distribution over experts.
    probs_em = scores_em / scores_em.sum(0, keepdim=True) if sigmoid else scores_em
    flat = experts.reshape(-1)  # (k*N,) assignment a = slot * N + token
    if valid is not None:  # padding goes to bucket E, which sorts last and is never computed
        flat = flat.masked_fill(~valid.repeat(top_k), e)
    # A stable sort by expert keeps the slot-major enumeration within each expert: (expert, slot, token) order.
    sorted_expert, order = flat.sort(stable=True)
    requested = torch.bincount(flat, minlength=e + 1)[:e]  # (E,)
    n_requested = requested.sum()
    if capacity_limit is None:
        order = order[: int(n_requested)]
        counts = requested
    else:
        starts = torch.cat([requested.cumsum(0) - requested, n_requested.view(1)])  # (E+1,) first slot per expert
        position = torch.arange(n * top_k, device=logits.device) - starts[sorted_expert]  # rank in its queue
        order = order[(position < capacity_limit) & (sorted_expert < e)]
        counts = requested.clamp(max=capacity_limit)
    dropped = 1.0 - counts.sum() / n_requested.clamp(min=1)
    return Routing(
        token_idx=order.remainder(n), gate=gate.reshape(-1)[order], counts=counts, requested=requested,
        dropped_frac=dropped.float(), probs=probs_em.t(), topk_experts=experts.t(),
    )


def expert_choice(logits: torch.Tensor, capacity_limit: int, valid: torch.Tensor | None = None) -> Routing:
    """Each expert picks its ``capacity_limit`` highest-probability tokens (Zhou et al. 2022).

    logits: (N, E). A token may be picked by several experts or by none (dropped: it passes through
    the residual). Gate = the token's softmax probability for that expert.
    """
    n, e = logits.shape
    probs_em = logits.t().softmax(0)  # (E, N)
    n_valid = n if valid is None else int(valid.sum())
    scores = probs_em if valid is None else probs_em.masked_fill(~valid, -1.0)  # padding is never picked
    c = min(capacity_limit, n_valid)
    gate, tokens = scores.topk(c, dim=-1)  # (E, C) each expert's tokens, already grouped by expert
    token_idx = tokens.reshape(-1)
    picked = torch.zeros(n, dtype=torch.bool, device=logits.device).index_fill_(0, token_idx, True)
    counts = torch.full((e,), c, dtype=torch.long, device=logits.device)
    dropped = 1.0 - picked.sum() / max(n_valid, 1)
    return Routing(token_idx=token_idx, gate=gate.reshape(-1), counts=counts, requested=counts,
                   dropped_frac=dropped.float(), probs=probs_em.t())
