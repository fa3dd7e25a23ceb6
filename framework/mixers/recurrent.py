"""Recurrent token mixers: Elman RNN, LSTM and GRU on PyTorch's fused kernels, as layers of the stack.

Each carries an O(1) decode state (h, or (h, c) for the LSTM) and reports the ``rnn`` family's
statistics: hidden-state norm per layer and per quarter of the sequence, and (while recording, on
validation batches) the share of saturated tanh/sigmoid units.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torchmetrics import Metric

from framework.config_schema import check
from framework.metrics import Accumulating, LayerIdMean

from .recurrent_activations import layer_activations, saturated_share
from .spec import LayerContext, MixerResult, MixerSpec

TIME_SEGMENTS = 4  # hidden-state norm is also reported per quarter of the sequence
Cell = Literal["elman", "lstm", "gru"]


@dataclass
class RecurrentConfig:
    hidden_size: int | None = None  # state width of every recurrent layer; null = d_model (else projected back to d_model)
    nonlinearity: Literal["tanh", "relu"] = "tanh"  # elman layers only (LSTM/GRU gates are fixed)

    def __post_init__(self) -> None:
        if self.hidden_size is not None:
            check(self.hidden_size >= 1, "rnn.hidden_size", f"must be >= 1 or null, got {self.hidden_size}")


class RecurrentState:
    """The mutable decode state of one recurrent layer: None (zeros) until the first step."""

    def __init__(self) -> None:
        self.value: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None

    def detach(self) -> "RecurrentState":
        out = RecurrentState()
        if self.value is not None:
            out.value = tuple(v.detach() for v in self.value) if isinstance(self.value, tuple) else self.value.detach()
        return out

    @property
    def batch_size(self) -> int | None:
        if self.value is None:
            return None
        return (self.value[0] if isinstance(self.value, tuple) else self.value).shape[1]


def check_right_padding(attention_mask: torch.Tensor | None) -> None:
    """A recurrence reads padding like any token: only trailing padding (after every real token) is
    harmless, since no real position comes after it."""
    if attention_mask is None:
        return
    mask = attention_mask.bool()
    if (mask[:, 1:] & ~mask[:, :-1]).any():
        raise ValueError("recurrent layers: attention_mask has padding before real tokens; they support right padding only")


class RecurrentMixer(nn.Module):
    """One fused single-layer ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (d_model -> hidden), projected back to
    d_model when hidden differs."""

    def __init__(self, cell: Cell, d_model: int, hidden: int, bias: bool = True, nonlinearity: str = "tanh") -> None:
        super().__init__()
        kwargs = dict(input_size=d_model, hidden_size=hidden, num_layers=1, bias=bias, batch_first=True)
        if cell == "lstm":
            self.cell: nn.RNNBase = nn.LSTM(**kwargs)
        elif cell == "gru":
            self.cell = nn.GRU(**kwargs)
        else:
            self.cell = nn.RNN(nonlinearity=nonlinearity, **kwargs)
        self.out_proj = nn.Linear(hidden, d_model, bias=False) if hidden != d_model else None
        self.record_stats = False  # saturation needs the gates recomputed: validation batches only
        self.last_stats = None

    def new_state(self) -> RecurrentState:
        return RecurrentState()

    def init_weights(self, std: float, out_std: float) -> None:
        pass  # the cell keeps PyTorch's uniform(-1/sqrt(H), 1/sqrt(H)) init: a normal(0.02) one starves it

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                state: RecurrentState | None = None) -> MixerResult:
        if state is None or state.value is None:
            check_right_padding(attention_mask)
        initial = state.value if state is not None else None
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # CPU autocast sends LSTM to oneDNN in bf16, which fails ("could not create a primitive descriptor")
            # on CPUs without native bf16; the recurrence runs in fp32 there, as the SSM scans do.
            with torch.autocast("cpu", enabled=False):
                h, final = self.cell(x.float(), _to_float(initial))
        else:
            h, final = self.cell(x, initial)  # h: (B, T, H)
        if state is not None:
            state.value = final
        stats = self._stats(x, h, initial)
        return MixerResult(self.out_proj(h) if self.out_proj is not None else h, None, stats)

    @torch.no_grad()
    def _stats(self, x: torch.Tensor, h: torch.Tensor, initial) -> dict[str, torch.Tensor]:  # noqa: ANN001
        norms = h.detach().float().norm(dim=-1)  # (B, T)
        stats = {"hidden_norm": norms.mean()}
        if norms.shape[1] >= TIME_SEGMENTS:
            stats["hidden_norm_by_time"] = torch.stack([s.mean() for s in norms.tensor_split(TIME_SEGMENTS, dim=1)])
        if self.record_stats:
            b = x.shape[0]
            zeros = h.new_zeros(b, h.shape[-1])
            if initial is None:
                h0, c0 = zeros, None
            elif isinstance(initial, tuple):
                h0, c0 = initial[0][0], initial[1][0]
            else:
                h0, c0 = initial[0], None
            share = saturated_share(layer_activations(self.cell, x.detach(), h.detach(), h0, c0))
            if share is not None:
                stats["saturation"] = share
        return stats


def _to_float(value):  # noqa: ANN001, ANN202 - h, (h, c) or None
    if value is None:
        return None
    return tuple(v.float() for v in value) if isinstance(value, tuple) else value.float()


def _builder(cell: Cell):
    def build(ctx: LayerContext) -> RecurrentMixer:
        cfg, opts = ctx.config, ctx.options
        hidden = opts.hidden_size or cfg.d_model
        return RecurrentMixer(cell, cfg.d_model, hidden, cfg.bias, opts.nonlinearity)

    return build


class TimeSegmentMean(Accumulating):
    """Hidden-state norm per quarter of the sequence, averaged over the recurrent layers: t0..t3 (+ mean)."""

    def __init__(self, layer_ids: list[int], **kwargs) -> None:
        super().__init__("rnn_hidden_norm_by_time", (len(layer_ids), TIME_SEGMENTS), layer_ids, **kwargs)

    def compute(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            return {}
        per_time = self.mean_value().mean(0).float()
        return {**{f"t{i}": v for i, v in enumerate(per_time)}, "mean": per_time.mean()}


def recurrent_metrics(cfg, layer_ids: list[int]) -> dict[str, Metric]:  # noqa: ANN001
    return {
        # Mean L2 norm of each layer's hidden state over batch and time: growth/decay flags instability.
        "rnn/hidden_norm": LayerIdMean("rnn_hidden_norm", layer_ids),
        # The same per quarter of the sequence: does the state drift over time?
        "rnn/hidden_norm_by_time": TimeSegmentMean(layer_ids),
        # Share of tanh/sigmoid units with |activation| > 0.99 (validation batches; absent for relu Elman).
        "rnn/saturation": LayerIdMean("rnn_saturation", layer_ids),
    }


_DESCRIPTIONS = {"lstm": "LSTM cell (fused kernel), O(1) decode state (h, c)",
                 "gru": "GRU cell (fused kernel), O(1) decode state h",
                 "elman": "Elman RNN cell (tanh or relu via rnn.nonlinearity), O(1) decode state h"}

LSTM, GRU, ELMAN = (
    MixerSpec(name=cell, role="token", family="rnn", options="rnn", carries="recurrent", description=_DESCRIPTIONS[cell],
              build=_builder(cell), metrics=recurrent_metrics)
    for cell in ("lstm", "gru", "elman")
)
