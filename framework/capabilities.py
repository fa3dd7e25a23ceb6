"""Optional model capabilities, declared as protocols beside the output contract (``framework/output.py``).

A model offers a capability by having the method; the core asks ``isinstance(model, Generates)``, never
``getattr``/``hasattr``, so every capability the core relies on is listed (and documented) here.
``runtime_checkable`` checks that the methods exist, not their signatures: the contract kit checks behaviour.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from .output import ModelOutput, takes_predict_mask

__all__ = ["CarriesState", "Encodes", "Generates", "HasFigures", "HasGradStats", "PredictsMasked", "ResetsState",
           "StepsWithOptimizer", "takes_predict_mask"]


@runtime_checkable
class Generates(Protocol):
    """Sampling: (B, T) prompt ids -> (B, T + new) ids (encoder-decoders: the generated target without the
    start token). ``temperature=0`` is greedy; extra keywords (``generator``, ``num_beams``, ...) are optional."""

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, **kwargs: Any) -> torch.Tensor: ...


@runtime_checkable
class Encodes(Protocol):
    """Encoder output for (B, S) ids: a pooled embedding (encoders) or the memory a decoder attends to."""

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any: ...


@runtime_checkable
class HasFigures(Protocol):
    """Images logged once at fit start as ``<plugin>/<name>``: {name: (H, W, C) uint8 array}."""

    def figures(self) -> dict[str, np.ndarray]: ...


@runtime_checkable
class ResetsState(Protocol):
    """Stateful models (recurrent TBPTT): drop the carried state; called at each training epoch start."""

    def reset_state(self) -> None: ...


@runtime_checkable
class CarriesState(ResetsState, Protocol):
    """Stateful models whose carried state is part of a checkpoint, so a resumed run continues the stream
    exactly: a dict of tensors (or None: nothing carried yet), and back."""

    def carried_state(self) -> dict[str, Any] | None: ...

    def load_carried_state(self, state: dict[str, Any], device: torch.device) -> None: ...


@runtime_checkable
class StepsWithOptimizer(Protocol):
    """A module (any submodule of the model) updated after every optimizer step, outside the gradient: e.g. the
    selection bias of auxiliary-loss-free MoE balancing. Its state belongs in buffers (checkpointed)."""

    def after_optimizer_step(self) -> None: ...


@runtime_checkable
class HasGradStats(Protocol):
    """Per-part gradient norms {key: scalar}, read after backward every ``log_every_n_steps``, logged as
    ``<plugin>/<key>``."""

    def grad_stats(self) -> dict[str, torch.Tensor]: ...


class PredictsMasked(Protocol):
    """Masked-LM models whose ``forward`` takes ``predict_mask`` (B, T) bool and returns logits (N, vocab) at
    those positions only, with ``ModelOutput.scored`` set. Every model has a ``forward``, so ``isinstance``
    cannot tell: the check is ``takes_predict_mask(model)`` (the signature has the parameter)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                predict_mask: torch.Tensor | None = None, **kwargs: Any) -> ModelOutput: ...
