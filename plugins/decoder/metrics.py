"""The decoder plugin's metrics: each mixer family's own, for the layers that use it (``moe/...`` routing,
``rnn/...`` saturation). Shared statistics (``attn/...``, ``resid/...``) are logged by the core."""
from __future__ import annotations

from torchmetrics import Metric

from framework.stack import StackConfig


def decoder_metrics(cfg: StackConfig) -> dict[str, Metric]:
    layers_of: dict[str, tuple] = {}
    for i, spec in enumerate(cfg.token_mixers + cfg.channel_mixers):
        if spec.metrics is not None:
            entry = layers_of.setdefault(spec.family, (spec, []))
            entry[1].append(i % cfg.n_layers)
    metrics: dict[str, Metric] = {}
    for spec, layer_ids in layers_of.values():
        metrics.update(spec.metrics(cfg, sorted(layer_ids)))
    return metrics
