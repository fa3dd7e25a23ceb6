"""Metrics of the sparse plugin, logged as sparse/attn/<name>/...: structural density per layer,
effective receptive field, the entropy / top-k mass measure shared with dense attention, and for lsh
bucket balance and recall."""
from __future__ import annotations

import torch
from torchmetrics import Metric

from framework.metrics import LayerMean

from .config import SparseLMConfig


class ScalarMean(Metric):
    """Running mean of a scalar ``stats[key]``; absent keys are skipped."""

    full_state_update = False

    def __init__(self, key: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.key = key
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, stats: dict[str, torch.Tensor]) -> None:
        if self.key in stats:
            self.total += stats[self.key].detach().to(self.total.device, torch.float64).mean()
            self.count += 1

    def compute(self) -> torch.Tensor:
        return (self.total / self.count.clamp(min=1)).float()


def sparse_metrics(cfg: SparseLMConfig) -> dict[str, Metric]:
    n = cfg.n_layers
    metrics: dict[str, Metric] = {
        # Pairs computed / pairs of full causal attention, per layer.
        "attn/density": LayerMean("attn_density", n),
        # Empirical sparsity (validation batches), the same measure as dense attention.
        "attn/entropy": LayerMean("attn_entropy_norm", n, optional=True),
        "attn/topk_mass": LayerMean("attn_topk_mass", n, optional=True),
    }
    if cfg.attention == "lsh":
        metrics["attn/lsh_balance"] = LayerMean("attn_lsh_balance", n, optional=True)
        metrics["attn/lsh_recall"] = LayerMean("attn_lsh_recall", n, optional=True)
    else:
        # Share of positions that reach the last one through all layers.
        metrics["attn/receptive_field"] = ScalarMean("attn_receptive_field")
    return metrics
