"""The output contract every archlab model returns from ``forward``."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class ModelOutput:
    """What ``model(input_ids, attention_mask=None, ...)`` returns.

    logits:   (B, T, vocab) scores for the objective's targets; or (N, vocab) when ``scored`` is set.
    aux_loss: scalar added to the objective's loss (zero for most models, e.g. MoE balance loss).
    stats:    tensors the plugin's metrics consume (statistics are outputs, not hidden state).
    scored:   (B, T) bool or None. A model whose ``forward`` takes ``predict_mask`` (masked-LM models:
              only ~15% of positions are scored) may compute logits at those positions only; it then
              returns them as (N, vocab) in row-major order of the mask and sets ``scored`` to it.
    """

    logits: torch.Tensor
    aux_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    scored: torch.Tensor | None = None

    def aligned_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` (B, T) in the layout of ``logits``: (B, T), or (N,) at the scored positions."""
        return labels if self.scored is None else labels[self.scored]


def takes_predict_mask(model: nn.Module) -> bool:
    """Whether ``model.forward`` can compute logits at the scored positions only (``ModelOutput.scored``)."""
    return "predict_mask" in inspect.signature(model.forward).parameters
