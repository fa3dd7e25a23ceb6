"""``val/generated_exact_match``: exact match of *generated* targets (greedy, KV-cached), not the
teacher-forced ``val/exact_match`` the core logs. Optional, for encoder-decoder models:

    archlab train model=t5 data=seq2seq \\
        +callbacks.generated_exact_match._target_=framework.seq2seq_callback.GeneratedExactMatch

A row counts when every position with a label (labels != -100, EOS included) is generated exactly.
"""
from __future__ import annotations

from typing import Any

import lightning as L
import torch


class GeneratedExactMatch(L.Callback):
    """Greedy-decodes each validation batch (up to ``max_batches`` of them) and logs the share of rows
    generated exactly right."""

    def __init__(self, max_batches: int | None = None, num_beams: int = 1) -> None:
        self.max_batches, self.num_beams = max_batches, num_beams
        self._right = 0
        self._rows = 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._right = self._rows = 0

    @torch.no_grad()
    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: dict, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        model = pl_module.model
        if not getattr(model, "is_encoder_decoder", False) or "labels" not in batch:
            return
        if self.max_batches is not None and batch_idx >= self.max_batches:
            return
        labels = batch["labels"]  # (B, T)
        out = model.generate(batch["input_ids"], max_new_tokens=labels.shape[1],
                             attention_mask=batch.get("attention_mask"), num_beams=self.num_beams)
        pred = torch.full_like(labels, -1)
        n = min(out.shape[1], labels.shape[1])
        pred[:, :n] = out[:, :n]
        scored = labels != -100
        right = ((pred == labels) | ~scored).all(-1) & scored.any(-1)
        self._right += int(right.sum())
        self._rows += int(scored.any(-1).sum())

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._rows:
            pl_module.log("val/generated_exact_match", self._right / self._rows)
