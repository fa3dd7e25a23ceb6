"""Mixture-of-Experts feed-forward layer: a router, routed experts, optional shared experts.

``MoEFeedForward(x)`` returns an ``MoEOutput``: the output plus its weighted auxiliary loss and its
statistics as values (torchtune's idiom), so the enclosing model sums ``aux_loss`` into
``ModelOutput.aux_loss`` and stacks the per-layer stats (``collect_moe_stats``) into ``ModelOutput.stats``.

Dispatch: the router sorts assignments by expert; the tokens are gathered in that order (index_select),
all experts run at once with grouped matmuls over their contiguous slices (``GroupedExperts``), and the
gated outputs are scattered back with index_add. No Python loop over tokens (nor, on the grouped_mm
path, over experts).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..feedforward import GatedMLP, MLP
from .across_ranks import data_parallel, sum_over_ranks
from .config import MoEConfig
from .experts import GroupedExperts
from .router import Affinity, Router, Routing, capacity, expert_choice, token_choice


@dataclass
class MoEOutput:
    """output: (B, T, C); aux_loss: weighted balance + z-loss (scalar); router_logits: (B*T, E);
    stats: per-layer tensors (see ``MoEFeedForward.forward``)."""

    output: torch.Tensor
    aux_loss: torch.Tensor
    router_logits: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


def load_balance_loss(probs: torch.Tensor, requested: torch.Tensor) -> torch.Tensor:
    """Switch loss E * sum_i f_i * P_i: f_i = fraction of assignments to expert i (no gradient),
    P_i = mean router probability of expert i over tokens. probs: (N, E) of the routed tokens;
    requested: (E,) assignment counts. Equals 1 when both are uniform; its minimum under uniform P."""
    return balance_from_means(probs.mean(0), requested)


def balance_from_means(mean_probs: torch.Tensor, requested: torch.Tensor) -> torch.Tensor:
    """The Switch loss from P (E,) and the assignment counts (E,): E * sum_i f_i * P_i."""
    f = requested.float() / requested.sum().clamp(min=1)
    return mean_probs.shape[-1] * (f * mean_probs).sum()


def sequence_balance_loss(routing: Routing, b: int, t: int, valid: torch.Tensor | None) -> torch.Tensor:
    """DeepSeek-V3's sequence-wise balance loss: per sequence, sum_i f_i * P_i with f_i = E / (k T) * (tokens
    of the sequence choosing expert i) and P_i = the mean normalised affinity of expert i; averaged over the
    batch. 1 when balanced within every sequence."""
    probs, chosen = routing.probs, routing.topk_experts  # (N, E), (N, k)
    e, k = probs.shape[-1], chosen.shape[-1]
    weight = torch.ones(b * t, device=probs.device) if valid is None else valid.float()
    hits = torch.zeros_like(probs).scatter_(1, chosen, 1.0) * weight[:, None]  # (N, E)
    n_tokens = weight.view(b, t).sum(1).clamp(min=1)  # (B,)
    f = hits.view(b, t, e).sum(1) * (e / k) / n_tokens[:, None]  # (B, E)
    p = (probs * weight[:, None]).view(b, t, e).sum(1) / n_tokens[:, None]
    return (f.detach() * p).sum(-1).mean()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)^2; logits (N, E)."""
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


def make_expert(activation: str, d_model: int, d_ff: int, bias: bool) -> nn.Module:
    if activation == "swiglu":
        return GatedMLP(d_model, d_ff, "silu", bias)
    if activation == "gelu":
        return MLP(d_model, d_ff, "gelu", bias)
    raise ValueError(f"moe.activation: {activation!r} is not one of 'swiglu', 'gelu'")


class MoEFeedForward(nn.Module):
    """Routed experts (token choice or expert choice, capacity or dropless) + optional shared experts."""

    def __init__(self, d_model: int, cfg: MoEConfig, d_ff: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.cfg = cfg
        hidden = cfg.d_ff or d_ff
        if hidden is None:
            raise ValueError("moe.d_ff: set it, or give the layer the host's FFN width")
        self.d_ff = hidden
        self.router = Router(d_model, cfg.n_experts, cfg.jitter)
        self.experts = GroupedExperts(cfg.n_experts, d_model, hidden, cfg.activation, cfg.bias)
        # n shared experts of width d_ff are one FFN of width n * d_ff (their sum is the same function).
        self.shared = (make_expert(cfg.activation, d_model, cfg.n_shared_experts * hidden, cfg.bias)
                       if cfg.n_shared_experts else None)
        self.dropout = nn.Dropout(dropout)
        if cfg.bias_balance:
            # Auxiliary-loss-free balancing: the bias (saved in checkpoints; Hugging Face's e_score_correction_bias)
            # and the assignments counted since the last optimizer step (not saved: a step's own count).
            self.register_buffer("expert_bias", torch.zeros(cfg.n_experts))
            self.register_buffer("load_since_update", torch.zeros(cfg.n_experts), persistent=False)

    @property
    def batch_dependent(self) -> bool:
        """True when a token's output depends on the rest of the batch: an expert's capacity is shared by
        all its tokens (token choice with capacity), or experts pick among all tokens (expert choice)."""
        return not self.cfg.dropless or self.cfg.router == "expert_choice"

    # ---- parameters -------------------------------------------------------------------------
    def expert_params(self) -> int:
        """Parameters of one routed expert."""
        return self.experts.params_per_expert()

    def inactive_params(self) -> int:
        """Routed-expert parameters a token does not use: (E - k) experts (k = average for expert choice)."""
        return (self.cfg.n_experts - self.cfg.top_k) * self.expert_params()

    @torch.no_grad()
    def init_weights(self, std: float, out_std: float | None = None) -> None:
        """Normal init of every matrix (router and experts); ``out_std`` for the experts' output projections."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for weight, bias in self.experts.projections():
            nn.init.normal_(weight, std=out_std if weight is self.experts.down_proj and out_std else std)
            if bias is not None:
                nn.init.zeros_(bias)
        if out_std is not None and self.shared is not None:
            nn.init.normal_(self.shared.down_proj.weight, std=out_std)

    @torch.no_grad()
    def upcycle_(self, ffn: MLP | GatedMLP) -> None:
        """Sparse upcycling (Komatsuzaki et al. 2022): every routed expert becomes a copy of a trained dense FFN.
        With one expert and top_k=1 the layer then computes exactly that FFN (the router is left as it is)."""
        for i in range(len(self.experts)):
            self.experts.load_dense_(i, ffn)

    def after_optimizer_step(self) -> None:  # framework.capabilities.StepsWithOptimizer
        if self.cfg.bias_balance:
            self.update_expert_bias()

    @torch.no_grad()
    def update_expert_bias(self) -> None:
        """After an optimizer step: bias_i += rate * sign(mean load - load_i) over the assignments the step's
        forwards requested (Wang et al. 2024, arXiv 2408.15664), then start counting again."""
        counts = self.load_since_update
        if counts.sum() > 0:
            self.expert_bias.add_(self.cfg.bias_rate * torch.sign(counts.mean() - counts))
        counts.zero_()

    # ---- forward ----------------------------------------------------------------------------
    def route(self, logits: torch.Tensor, valid: torch.Tensor | None) -> Routing:
        cfg, n = self.cfg, logits.shape[0]
        n_tokens = n if valid is None else int(valid.sum())
        limit = capacity(n_tokens, cfg.top_k, cfg.n_experts, cfg.capacity_factor(self.training))
        if cfg.router == "expert_choice":
            return expert_choice(logits, limit, valid)
        affinity = Affinity(cfg.score, getattr(self, "expert_bias", None), cfg.n_groups, cfg.topk_groups,
                            cfg.norm_topk, cfg.routed_scaling)
        return token_choice(logits, cfg.top_k, cfg.softmax_order, None if cfg.dropless else limit, valid, affinity)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> MoEOutput:
        """x: (B, T, C); attention_mask: (B, T) 1 = token, 0 = padding (padding is not routed).

        stats (all detached): load (E,) fraction of requested assignments per expert; tokens_per_expert (E,)
        computed assignments; dropped_frac, balance_loss, z_loss (unweighted), router_confidence (mean top-1
        probability); coselect (E, E) fraction of tokens choosing both experts (token choice, k >= 2).
        """
        b, t, c = x.shape
        flat = x.reshape(b * t, c)  # (N, C)
        valid = None if attention_mask is None else attention_mask[:, -t:].reshape(-1).bool()
        logits = self.router(flat)  # (N, E) float32
        routing = self.route(logits, valid)

        # Experts: one contiguous batch each, in expert order (the routing sorted them so).
        xs = flat.index_select(0, routing.token_idx)  # (M, C)
        ys = self.experts(xs, routing.counts)
        ys = ys * routing.gate.unsqueeze(-1).to(ys.dtype)  # (M, C)
        out = torch.zeros((b * t, c), dtype=ys.dtype, device=x.device).index_add_(0, routing.token_idx, ys)
        if self.shared is not None:
            out = out + self.shared(flat)
        out = self.dropout(out.to(x.dtype)).reshape(b, t, c)

        probs = routing.probs  # (N, E)
        routed_probs = probs if valid is None else probs[valid]
        requested, prob_sum = routing.requested.float(), routed_probs.sum(0)
        n_routed = prob_sum.new_tensor(float(len(routed_probs)))
        if self.training and data_parallel():  # the global batch's f and P (framework/nn/moe/across_ranks.py)
            requested, n_routed = sum_over_ranks(requested), sum_over_ranks(n_routed)
            prob_sum = sum_over_ranks(prob_sum, differentiable=True)
        balance = balance_from_means(prob_sum / n_routed.clamp(min=1), requested)
        z = router_z_loss(logits if valid is None else logits[valid])
        aux = self.cfg.balance_loss_weight * balance + self.cfg.z_loss_weight * z
        if self.cfg.seq_balance_loss_weight > 0:
            aux = aux + self.cfg.seq_balance_loss_weight * sequence_balance_loss(routing, b, t, valid)
        if self.cfg.bias_balance and self.training:
            self.load_since_update.add_(requested.detach())  # every rank the same counts: the same bias
        stats = self._stats(routing, routed_probs, balance, z, valid, requested)
        return MoEOutput(output=out, aux_loss=aux, router_logits=logits, stats=stats)

    @torch.no_grad()
    def _stats(self, routing: Routing, probs: torch.Tensor, balance: torch.Tensor, z: torch.Tensor,
               valid: torch.Tensor | None, requested: torch.Tensor) -> dict[str, torch.Tensor]:
        """``requested``: the assignment counts of the global batch while training data-parallel, else local."""
        e = self.cfg.n_experts
        requested = requested.float()
        stats = {
            "load": requested / requested.sum().clamp(min=1),
            "tokens_per_expert": routing.counts.detach(),
            "dropped_frac": routing.dropped_frac.detach(),
            "balance_loss": balance.detach(),
            "z_loss": z.detach(),
            "router_confidence": probs.max(-1).values.mean() if len(probs) else probs.new_zeros(()),
            "max_load": requested.max() / requested.mean().clamp(min=1e-9),  # 1 = balanced, E = one expert
        }
        if self.cfg.bias_balance:
            stats["bias"] = self.expert_bias.detach().clone()
        if routing.topk_experts is not None and routing.topk_experts.shape[-1] >= 2:
            chosen = routing.topk_experts if valid is None else routing.topk_experts[valid]
            hot = torch.zeros(len(chosen), e, device=probs.device).scatter_(1, chosen, 1.0)  # (N, E) multi-hot
            stats["coselect"] = (hot.t() @ hot) / max(len(chosen), 1)  # (E, E)
        return stats


def collect_moe_stats(outputs: list[MoEOutput], prefix: str = "moe_") -> dict[str, torch.Tensor]:
    """Stack per-layer stats into (n_moe_layers, ...) tensors named ``<prefix><stat>``, plus
    ``hist_<prefix>load`` (E,): the expert load averaged over layers, logged as a W&B histogram."""
    if not outputs:
        return {}
    keys = outputs[0].stats.keys()
    stats = {f"{prefix}{k}": torch.stack([o.stats[k] for o in outputs]) for k in keys}
    stats[f"hist_{prefix}load"] = stats[f"{prefix}load"].mean(0)
    if f"{prefix}bias" in stats:
        stats[f"hist_{prefix}bias"] = stats.pop(f"{prefix}bias").mean(0)
    return stats
