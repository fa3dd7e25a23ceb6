"""The output contract every archlab model returns from ``forward``."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelOutput:
    """What ``model(input_ids, attention_mask=None, ...)`` returns.

    logits:   (B, T, vocab) scores for the objective's targets.
    aux_loss: scalar added to the objective's loss (zero for most models, e.g. MoE balance loss).
    stats:    tensors the plugin's metrics consume (statistics are outputs, not hidden state).
    """

    logits: torch.Tensor
    aux_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
