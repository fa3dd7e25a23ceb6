"""Metrics the rnn_seq2seq plugin contributes; each name is its full log key (rnn_seq2seq/<name>)."""
from __future__ import annotations

import torch
from torchmetrics import Metric

from framework.metrics import Accumulating

from .config import RNNSeq2SeqConfig


class StatMean(Accumulating):
    """Running mean of a scalar ``stats[key]``; logs nothing when the key never appeared."""

    def __init__(self, key: str, **kwargs) -> None:
        super().__init__(key, (), **kwargs)

    def compute(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean_value().float()} if self.count > 0 else {}


def rnn_seq2seq_metrics(cfg: RNNSeq2SeqConfig) -> dict[str, Metric]:
    if cfg.attention == "none":
        return {}
    # Entropy of the attention over the real source tokens, normalised (1 = uniform, 0 = one token):
    # a model that learned an alignment (reverse, copy) drives it towards 0.
    return {"rnn_seq2seq/attn_entropy": StatMean("attn_entropy_norm")}
