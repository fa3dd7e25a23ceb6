"""Metrics the t5 plugin contributes; each name is its full log key (t5/<name>/...). Its attention and residual
statistics are shared ones (``attn/entropy/encoder``, ``resid/rms/decoder``, ...), logged by the core."""
from __future__ import annotations

import torch
from torchmetrics import Metric

from framework.metrics import Accumulating
from framework.nn.moe import moe_metrics

from .config import T5Config


class BucketMean(Accumulating):
    """Mean relative-position bias per bucket (over heads): which distances the model favours.

    compute() -> {"bucket0": ..., ..., "near_minus_far": bucket 0 minus the last bucket}."""

    def __init__(self, key: str, n_buckets: int, **kwargs) -> None:
        super().__init__(key, (n_buckets,), **kwargs)

    def compute(self) -> dict[str, torch.Tensor]:
        mean = self.mean_value().float()
        return {f"bucket{i}": v for i, v in enumerate(mean)} | {"near_minus_far": mean[0] - mean[-1]}


def t5_metrics(cfg: T5Config) -> dict[str, Metric]:
    enc, dec = cfg.n_layers, cfg.decoder_layers
    out: dict[str, Metric] = {
        "t5/rel_bias_encoder": BucketMean("rel_bias_encoder", cfg.relative_buckets),
        "t5/rel_bias_decoder": BucketMean("rel_bias_decoder", cfg.relative_buckets),
    }
    if cfg.ffn == "moe":  # routing metrics, layer0.. = encoder blocks, then decoder blocks
        out |= moe_metrics(list(range(enc + dec)), cfg.moe.n_experts, cfg.moe.top_k, prefix="t5/moe/")
    return out
