"""Metrics the rnn plugin contributes (logged as rnn/<name>/...). Gradient norms per layer
(rnn/grad_norm/<part>) come from ``RNNLM.grad_stats``, which the training loop logs after backward."""
from __future__ import annotations

from torchmetrics import Metric

from framework.metrics import LayerMean

from .config import RNNConfig
from .model import TIME_SEGMENTS


class SegmentMean(LayerMean):
    """LayerMean over the quarters of the sequence instead of layers: keys t0..t3 (+ mean)."""

    def compute(self):
        return {k.replace("layer", "t"): v for k, v in super().compute().items()}


def rnn_metrics(cfg: RNNConfig) -> dict[str, Metric]:
    n = cfg.n_layers
    return {
        # Mean L2 norm of each layer's hidden state over batch and time: growth/decay flags instability.
        "hidden_norm": LayerMean("hidden_norm", n),
        # The same norm per quarter of the sequence (averaged over layers): does the state drift over time?
        "hidden_norm_by_time": SegmentMean("hidden_norm_by_time", TIME_SEGMENTS, optional=True),
        # Share of tanh/sigmoid units with |activation| > 0.99 (validation batches; absent for relu Elman).
        "saturation": LayerMean("saturation", n, optional=True),
    }
