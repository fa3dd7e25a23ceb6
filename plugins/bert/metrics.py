"""Metrics the bert plugin contributes; each name is its full log key (bert/<name>/...)."""
from __future__ import annotations

from torchmetrics import Metric

from framework.metrics import LayerMean
from framework.nn.moe_metrics import moe_metrics

from .config import BertConfig


def bert_metrics(cfg: BertConfig) -> dict[str, Metric]:
    n = cfg.n_layers
    # ffn=moe: routing metrics of every layer, logged as bert/moe/<metric>/layerN.
    moe = moe_metrics(list(range(n)), cfg.moe.n_experts, cfg.moe.top_k, prefix="bert/moe/") if cfg.ffn == "moe" else {}
    return moe | {
        # RMS of the residual stream after each block (post-LN keeps it near 1; pre-norm lets it grow).
        "bert/residual_rms": LayerMean("residual_rms", n),
        # Empirical attention sparsity on validation batches, the same measure as every other plugin:
        # entropy / log(allowed keys) per layer (1 = uniform) and the mass in each query's top-k keys.
        "bert/attn_entropy": LayerMean("attn_entropy_norm", n, optional=True),
        "bert/attn_topk_mass": LayerMean("attn_topk_mass", n, optional=True),
    }
