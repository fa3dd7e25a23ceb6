"""Metrics the gpt plugin contributes (logged as gpt/<name>/...)."""
from __future__ import annotations

from torchmetrics import Metric

from framework.metrics import LayerMean
from framework.nn.moe_metrics import moe_metrics

from .config import GPTConfig


def gpt_metrics(cfg: GPTConfig) -> dict[str, Metric]:
    n = cfg.n_layers
    # ffn=moe: routing metrics of every layer, logged as gpt/moe/<metric>/layerN.
    moe = moe_metrics(list(range(n)), cfg.moe.n_experts, cfg.moe.top_k, prefix="moe/") if cfg.ffn == "moe" else {}
    return moe | {
        # RMS of the residual stream after each block: its growth with depth flags unstable training.
        "residual_rms": LayerMean("residual_rms", n),
        # Empirical attention sparsity (validation batches), comparable across architectures.
        "attn_entropy": LayerMean("attn_entropy_norm", n, optional=True),
        "attn_topk_mass": LayerMean("attn_topk_mass", n, optional=True),
        # Sparse attention kinds (model.attention != dense): pairs computed / full causal pairs, per layer.
        "attn_density": LayerMean("attn_density", n, optional=True),
    }
