"""Metrics the moe plugin contributes, logged as moe/<metric>/layerN and moe/<metric>/mean."""
from __future__ import annotations

from torchmetrics import Metric

from framework.metrics import LayerMean
from framework.nn.moe_metrics import moe_metrics as routing_metrics

from .config import MoEModelConfig


def moe_metrics(cfg: MoEModelConfig) -> dict[str, Metric]:
    metrics = routing_metrics(cfg.moe_layers, cfg.moe.n_experts, cfg.moe.top_k)
    # Comparable with gpt's: RMS of the residual stream after each block, attention sparsity on validation.
    metrics["residual_rms"] = LayerMean("residual_rms", cfg.n_layers)
    metrics["attn_entropy"] = LayerMean("attn_entropy_norm", cfg.n_layers, optional=True)
    return metrics
