"""torchmetrics for MoE layers: consume the ``moe_*`` stats that ``collect_moe_stats`` stacks per layer.

Every model that routes tokens adds ``moe_metrics(layer_ids, ..., prefix=...)`` to its metrics: the decoder
stack's moe mixer as ``moe/<metric>/layer<i>`` (and ``/mean``), bert and t5 under their own prefix.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torchmetrics import Metric

from framework.metrics import Accumulating, LayerIdMean, per_layer

LoadSummary = Literal["entropy", "min", "max", "cv"]


def normalised_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy of distributions p (..., n) over n, divided by log n: 1 = uniform, 0 = one-hot."""
    n = p.shape[-1]
    p = p / p.sum(-1, keepdim=True).clamp(min=1e-12)
    h = -(p * p.clamp(min=1e-12).log()).sum(-1)
    return h / math.log(n) if n > 1 else torch.ones_like(h)


class ExpertLoad(Accumulating):
    """A summary of the expert load (fraction of assignments per expert, accumulated over batches):
    ``entropy`` normalised (1 = balanced), ``min``/``max`` fractions, ``cv`` = std / mean over experts."""

    def __init__(self, summary: LoadSummary, layer_ids: list[int], n_experts: int, **kwargs) -> None:
        super().__init__("moe_load", (len(layer_ids), n_experts), layer_ids, **kwargs)
        self.summary = summary

    def compute(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            return {}
        load = self.mean_value()  # (L, E)
        load = load / load.sum(-1, keepdim=True).clamp(min=1e-12)
        if self.summary == "entropy":
            values = normalised_entropy(load)
        elif self.summary == "min":
            values = load.min(-1).values
        elif self.summary == "max":
            values = load.max(-1).values
        else:
            values = load.std(-1, unbiased=False) / load.mean(-1)
        return per_layer(values, self.layer_ids)


class CoSelection(Accumulating):
    """Normalised entropy of how often each expert pair is chosen together (k >= 2): 1 = all pairs alike,
    low = a few fixed pairs (experts that always fire together are redundant)."""

    def __init__(self, layer_ids: list[int], n_experts: int, **kwargs) -> None:
        super().__init__("moe_coselect", (len(layer_ids), n_experts, n_experts), layer_ids, **kwargs)

    def compute(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            return {}
        e = self.total.shape[-1]
        upper = torch.triu_indices(e, e, offset=1)
        pairs = self.mean_value()[:, upper[0], upper[1]]  # (L, E(E-1)/2)
        return per_layer(normalised_entropy(pairs), self.layer_ids)


class ParamCounts(Metric):
    """Total parameters vs parameters active per token (from stats ``moe_params_total``/``_active``)."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="max")
        self.add_state("active", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="max")

    def update(self, stats: dict[str, torch.Tensor]) -> None:
        if "moe_params_total" in stats:
            self.total.fill_(float(stats["moe_params_total"]))
            self.active.fill_(float(stats["moe_params_active"]))

    def compute(self) -> dict[str, torch.Tensor]:
        if self.total == 0:  # the model does not report its counts
            return {}
        return {"total": self.total.float(), "active": self.active.float()}


def moe_metrics(layer_ids: list[int], n_experts: int, top_k: int, prefix: str = "") -> dict[str, Metric]:
    """The MoE metric set for MoE layers at block indices ``layer_ids``; names get ``prefix``."""
    metrics: dict[str, Metric] = {
        "balance_loss": LayerIdMean("moe_balance_loss", layer_ids),
        "z_loss": LayerIdMean("moe_z_loss", layer_ids),
        "dropped_frac": LayerIdMean("moe_dropped_frac", layer_ids),
        "router_confidence": LayerIdMean("moe_router_confidence", layer_ids),
        "load_entropy": ExpertLoad("entropy", layer_ids, n_experts),
        "load_min": ExpertLoad("min", layer_ids, n_experts),
        "load_max": ExpertLoad("max", layer_ids, n_experts),
        "load_cv": ExpertLoad("cv", layer_ids, n_experts),
        "max_over_mean_load": LayerIdMean("moe_max_load", layer_ids),  # per batch: 1 = balanced, E = collapsed
        "params": ParamCounts(),
    }
    if top_k >= 2 and n_experts >= 3:
        metrics["coselect_entropy"] = CoSelection(layer_ids, n_experts)
    return {f"{prefix}{name}": m for name, m in metrics.items()}
