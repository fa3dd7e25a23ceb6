"""Position-wise feed-forward blocks: plain MLP and gated (SwiGLU / GeGLU)."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

Activation = Literal["gelu", "gelu_tanh", "relu", "silu"]
FeedForwardKind = Literal["mlp", "swiglu", "geglu"]


def activation_fn(name: Activation):
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":  # GPT-2's "gelu_new"
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    if name == "silu":
        return F.silu
    raise ValueError(f"activation: {name!r} is not one of gelu, gelu_tanh, relu, silu")


class MLP(nn.Module):
    """x -> down(act(up(x)))."""

    def __init__(self, d_model: int, d_ff: int, activation: Activation = "gelu", bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.act = activation_fn(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """attention_mask is unused (a position-wise layer); it is taken so every channel mixer is called alike."""
        return self.dropout(self.down_proj(self.act(self.up_proj(x))))

    @torch.no_grad()
    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.down_proj.weight, std=out_std)  # a residual output projection (GPT-2)


class GatedMLP(nn.Module):
    """x -> down(act(gate(x)) * up(x)) (Shazeer 2020); silu gives SwiGLU (Llama), gelu GeGLU (T5 v1.1)."""

    def __init__(self, d_model: int, d_ff: int, activation: Activation = "silu", bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.act = activation_fn(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.dropout(self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x)))

    @torch.no_grad()
    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.down_proj.weight, std=out_std)


def make_feedforward(
    kind: FeedForwardKind, d_model: int, d_ff: int, activation: Activation = "gelu", bias: bool = True, dropout: float = 0.0
) -> nn.Module:
    if kind == "mlp":
        return MLP(d_model, d_ff, activation, bias, dropout)
    if kind == "swiglu":
        return GatedMLP(d_model, d_ff, "silu", bias, dropout)
    if kind == "geglu":
        return GatedMLP(d_model, d_ff, "gelu", bias, dropout)
    raise ValueError(f"ffn: {kind!r} is not one of mlp, swiglu, geglu")
