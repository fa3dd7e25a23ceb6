"""Metrics the gpt plugin contributes (logged as gpt/<name>/...)."""
from __future__ import annotations

from torchmetrics import Metric

from framework.metrics import LayerMean

from .config import GPTConfig


def gpt_metrics(cfg: GPTConfig) -> dict[str, Metric]:
    n = cfg.n_layers
    return {
        # RMS of the residual stream after each block: its growth with depth flags unstable training.
        "residual_rms": LayerMean("residual_rms", n),
        # Empirical attention sparsity (validation batches), comparable across architectures.
        "attn_entropy": LayerMean("attn_entropy_norm", n, optional=True),
        "attn_topk_mass": LayerMean("attn_topk_mass", n, optional=True),
    }
