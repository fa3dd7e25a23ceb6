"""The mixer contract: what one layer of the composable decoder stack is made of.

Each layer of ``framework.stack`` is a **token mixer** (mixes information across positions: attention,
a sparse attention kind, a recurrent cell, ...) followed by a **channel mixer** (per position: MLP,
SwiGLU, mixture of experts, or none), each behind its own norm and residual. A mixer is an
``nn.Module`` built by a ``MixerSpec`` registered in the entry-point group ``archlab.mixers``
(built-ins register exactly like third-party mixers), so one new file plus one registry line makes a
mixer usable in any layer of any stack.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol, runtime_checkable

import torch
from torch import nn
from torchmetrics import Metric

Role = Literal["token", "channel"]
ENTRY_POINT_GROUP = "archlab.mixers"


@dataclass(frozen=True)
class LayerContext:
    """What a mixer's ``build`` gets: the whole stack config, the layer index, and the mixer's options
    (the nested config section named by ``MixerSpec.options``, already validated; None if it has none)."""

    config: Any
    layer: int
    options: Any = None


@dataclass
class MixerResult:
    """A mixer may return this instead of a bare tensor, to add an auxiliary loss or statistics.

    output: (B, T, d_model). aux_loss: scalar added to the training loss (e.g. MoE balance loss).
    stats: per-layer values. A key with "/" (``attn/entropy``) is a shared statistic (a scalar for this
    layer; the stack makes it (n_layers,) with NaN elsewhere); other keys are the mixer family's own and
    are stacked over the layers that report them (see ``MixerSpec.collect``).
    """

    output: torch.Tensor
    aux_loss: torch.Tensor | None = None
    stats: dict[str, torch.Tensor] | None = None


@runtime_checkable
class TokenMixer(Protocol):
    """forward(x (B, T, d), attention_mask (B, S) or None, state or None) -> (B, T, d) or MixerResult.

    attention_mask: 1 = token, 0 = padding, over the S = (already decoded) + T positions.
    state: None in training / full forwards; during generation the object ``new_state()`` returned,
    which the mixer updates in place (a KV cache for attention kinds, an O(1) recurrent state for RNN
    cells). ``new_state()`` returning None means the mixer cannot decode incrementally: generation then
    recomputes the whole (cropped) context every step.
    """

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, state: Any = None) -> Any: ...

    def new_state(self) -> Any: ...


@runtime_checkable
class ChannelMixer(Protocol):
    """forward(x (B, T, d), attention_mask (B, T) or None) -> (B, T, d) or MixerResult (MoE: aux loss, stats)."""

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Any: ...


@runtime_checkable
class ReportsStats(Protocol):
    """A mixer whose statistics live on the module after forward (attention kernels never return probabilities)."""

    def mixer_stats(self) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class InitialisesWeights(Protocol):
    """Called after the stack's normal(init_std) pass over every Linear/Embedding: e.g. residual output
    projections get ``out_std`` = init_std / sqrt(2 * n_layers) (GPT-2)."""

    def init_weights(self, std: float, out_std: float) -> None: ...


@dataclass(frozen=True)
class MixerSpec:
    """A registered mixer.

    name:        what ``model.mixer`` / ``model.layers`` (token) or ``model.ffn`` / ``model.ffn_layers``
                 (channel) say.
    role:        ``token`` or ``channel``.
    family:      statistics family and metric prefix (``attn``, ``rnn``, ``moe``, ``ffn``): mixers of one
                 family share metrics (``<family>/<metric>/layer<i>``).
    description: one line for ``archlab plugins``.
    build:       ``build(LayerContext) -> nn.Module`` honouring ``TokenMixer`` or ``ChannelMixer``.
    options:     the stack-config field holding this mixer's options (e.g. ``sparse``, ``moe``, ``rnn``);
                 setting options no layer uses is an error.
    causal:      whether the mixer can be causal (a decoder needs it).
    carries:     the decode state it keeps: ``kv`` (grows with the context), ``recurrent`` (O(1)),
                 ``none`` (no state: a channel mixer, or recompute).
    context_limited: whether it sees at most ``max_seq_len`` positions (attention) or any length (RNN).
    metrics:     ``metrics(config, layer_ids) -> {full log key: Metric}`` for the family's own statistics.
    collect:     ``collect(per_layer_stats) -> stats`` combines the family's private stats over its layers
                 (default: stack each key over the layers, named ``<family>_<key>``).
    """

    name: str
    role: Role
    family: str
    description: str
    build: Callable[[LayerContext], nn.Module]
    options: str | None = None
    causal: bool = True
    carries: Literal["kv", "recurrent", "none"] = "none"
    context_limited: bool = False
    metrics: Callable[[Any, list[int]], dict[str, Metric]] | None = None
    collect: Callable[[list[dict[str, torch.Tensor]]], dict[str, torch.Tensor]] | None = None

    def __post_init__(self) -> None:
        if self.role not in ("token", "channel"):
            raise ValueError(f"mixer {self.name!r}: role {self.role!r} is not 'token' or 'channel'")
