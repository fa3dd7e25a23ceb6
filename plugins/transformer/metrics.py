"""Metrics the transformer plugin contributes: none of its own. Its attention statistics (encoder self, decoder
self, cross: ``attn/entropy/<part>``, ``attn/topk_mass/<part>``) and residual RMS (``resid/rms/encoder``,
``resid/rms/decoder``) are shared statistics in ``stats``, logged by the core the same way for every architecture."""
from __future__ import annotations

from torchmetrics import Metric

from .config import TransformerConfig


def transformer_metrics(cfg: TransformerConfig) -> dict[str, Metric]:
    return {}
