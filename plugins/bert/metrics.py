"""Metrics the bert plugin contributes; each name is its full log key (bert/<name>/...). Its attention and residual
statistics are shared ones (``attn/entropy``, ``attn/topk_mass``, ``attn/density``, ``resid/rms``: one value per
layer, as the decoder stack's), logged by the core."""
from __future__ import annotations

from torchmetrics import Metric

from framework.nn.moe import moe_metrics

from .config import BertConfig


def bert_metrics(cfg: BertConfig) -> dict[str, Metric]:
    if cfg.ffn != "moe":
        return {}
    # ffn=moe: routing metrics of every layer, logged as bert/moe/<metric>/layerN.
    return moe_metrics(list(range(cfg.n_layers)), cfg.moe.n_experts, cfg.moe.top_k, prefix="bert/moe/")
