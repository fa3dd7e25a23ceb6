"""The output contract every archlab model returns from ``forward``. What a model may offer beyond it
(generate, encode, figures, reset_state, grad_stats, predict_mask) is declared in ``framework/capabilities.py``."""
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
    stats:    statistics as outputs, not hidden state. Two kinds, told apart by the key:
              - no "/" (``residual_rms``): private, consumed only by the plugin's own metrics;
              - with "/" (``attn/entropy``, ``attn/topk_mass``, ``attn/density``, ``resid/rms``,
                ``mixer/<kind>/<name>``, ``attn/entropy/encoder``): shared, logged by the core alike for
                every architecture (``framework/shared_stats.py``). A scalar, or a (L,) tensor with one value
                per layer and NaN where a layer has no such value (the attention entropy of an LSTM layer).
                The core averages it over the validation batches (NaN skipped, layer by layer) and logs
                ``<key>/layer<i>`` for every layer with a value plus ``<key>/mean`` over those layers, a
                scalar as ``<key>``; on training steps every ``plugin_metrics_every_n_steps`` as ``train/<key>...``.
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
