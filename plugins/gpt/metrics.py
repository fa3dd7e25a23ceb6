"""Metrics the gpt plugin contributes (logged as gpt/<name>/...)."""
from __future__ import annotations

from torchmetrics import Metric

from framework.metrics import LayerMean

from .config import GPTConfig


def gpt_metrics(cfg: GPTConfig) -> dict[str, Metric]:
    # RMS of the residual stream after each block: its growth with depth flags unstable training.
    return {"residual_rms": LayerMean("residual_rms", cfg.n_layers)}
