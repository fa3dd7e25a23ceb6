"""Metrics the transformer plugin contributes; each name is its full log key (transformer/<name>/...)."""
from __future__ import annotations

from torchmetrics import Metric

from framework.metrics import LayerMean

from .config import TransformerConfig


def transformer_metrics(cfg: TransformerConfig) -> dict[str, Metric]:
    # Attention sparsity per layer on validation batches: encoder self, decoder self, cross.
    out: dict[str, Metric] = {}
    for part, n in (("enc", cfg.n_layers), ("dec_self", cfg.decoder_layers), ("cross", cfg.decoder_layers)):
        out[f"transformer/{part}_attn_entropy"] = LayerMean(f"{part}_attn_entropy_norm", n, optional=True)
        out[f"transformer/{part}_attn_topk_mass"] = LayerMean(f"{part}_attn_topk_mass", n, optional=True)
    return out
