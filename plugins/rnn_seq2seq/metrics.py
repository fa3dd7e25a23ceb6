"""Metrics the rnn_seq2seq plugin contributes; each name is its full log key (rnn_seq2seq/<name>)."""
from __future__ import annotations

import torch
from torchmetrics import Metric

from .config import RNNSeq2SeqConfig


class StatMean(Metric):
    """Running mean of a scalar ``stats[key]``; logs nothing when the key never appeared."""

    full_state_update = False

    def __init__(self, key: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.key = key
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, stats: dict[str, torch.Tensor]) -> None:
        if self.key in stats:
            self.total += stats[self.key].detach().to(self.total.device, torch.float64)
            self.count += 1

    def compute(self) -> dict[str, torch.Tensor]:
        return {"mean": (self.total / self.count).float()} if self.count > 0 else {}


def rnn_seq2seq_metrics(cfg: RNNSeq2SeqConfig) -> dict[str, Metric]:
    if cfg.attention == "none":
        return {}
    # Entropy of the attention over the real source tokens, normalised (1 = uniform, 0 = one token):
    # a model that learned an alignment (reverse, copy) drives it towards 0.
    return {"rnn_seq2seq/attn_entropy": StatMean("attn_entropy_norm")}
