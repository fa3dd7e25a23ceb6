"""The metrics of a stack: each mixer family's own (``moe/...`` routing, ``rnn/...`` saturation, a third-party
mixer's ``<family>/...``), for the layers that use it. Shared statistics (``attn/...``, ``resid/...``) need no
metric: the core logs them."""
from __future__ import annotations

from torchmetrics import Metric

from .config import StackConfig


def stack_metrics(cfg: StackConfig) -> dict[str, Metric]:
    """{full log key: Metric} from every family's ``MixerSpec.metrics(cfg, layer_ids)``, each family once, with
    the ids of the layers whose token or channel mixer belongs to it."""
    layers_of: dict[str, tuple] = {}
    for i, spec in enumerate(cfg.token_mixers + cfg.channel_mixers):
        if spec.metrics is not None:
            entry = layers_of.setdefault(spec.family, (spec, []))
            entry[1].append(i % cfg.n_layers)
    metrics: dict[str, Metric] = {}
    for spec, layer_ids in layers_of.values():
        metrics.update(spec.metrics(cfg, sorted(layer_ids)))
    return metrics
