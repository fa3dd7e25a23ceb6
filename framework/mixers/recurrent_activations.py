"""The tanh/sigmoid activations inside one fused recurrent layer, recomputed for the saturation measure.

Fused kernels (nn.RNN/LSTM/GRU) return only the hidden states. Given those, every gate is one parallel
matmul away: the gate pre-activations at step t depend on the layer input x_t and on h_{t-1}, which is
the layer's own output shifted by one step. Only the LSTM cell state needs a (cheap, elementwise) loop.
This runs only while stats are recorded (validation batches), so training pays nothing.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

SATURATION_THRESHOLD = 0.99  # a tanh/sigmoid unit counts as saturated when |activation| > this


def _gate_preacts(layer: nn.RNNBase, x: torch.Tensor, h_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and recurrent parts of the gate pre-activations: (B, T, G*H) each."""
    cast = lambda p: p.to(x.dtype) if p is not None else None  # noqa: E731 (bf16 weights: compute in fp32)
    gi = F.linear(x, cast(layer.weight_ih_l0), cast(layer.bias_ih_l0) if layer.bias else None)
    gh = F.linear(h_prev, cast(layer.weight_hh_l0), cast(layer.bias_hh_l0) if layer.bias else None)
    return gi, gh


@torch.no_grad()
def layer_activations(
    layer: nn.RNNBase, x: torch.Tensor, h: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Bounded activations of a single-layer, batch-first recurrent module, each (B, T, H).

    x: (B, T, In) layer input; h: (B, T, H) its outputs; h0/c0: (B, H) initial state.
    Elman(tanh): {"h"}; GRU: {"r", "z", "n"}; LSTM: {"i", "f", "g", "o", "tanh_c"}. Elman(relu): {}.
    """
    dtype = torch.promote_types(layer.weight_hh_l0.dtype, torch.float32)  # at least fp32
    x, h, h0 = x.to(dtype), h.to(dtype), h0.to(dtype)
    if isinstance(layer, nn.RNN):  # Elman: h_t = tanh(...) exactly; relu units are unbounded
        return {"h": h} if layer.nonlinearity == "tanh" else {}
    h_prev = torch.cat([h0[:, None], h[:, :-1]], dim=1)  # (B, T, H): h_{t-1}
    gi, gh = _gate_preacts(layer, x, h_prev)
    if isinstance(layer, nn.GRU):
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r = torch.sigmoid(ir + hr)
        return {"r": r, "z": torch.sigmoid(iz + hz), "n": torch.tanh(in_ + r * hn)}
    i, f, g, o = (gi + gh).chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = torch.zeros_like(h0) if c0 is None else c0.to(dtype)
    cells = []
    for t in range(x.shape[1]):  # c_t = f_t * c_{t-1} + i_t * g_t
        c = f[:, t] * c + i[:, t] * g[:, t]
        cells.append(c)
    return {"i": i, "f": f, "g": g, "o": o, "tanh_c": torch.tanh(torch.stack(cells, dim=1))}


def saturated_share(activations: dict[str, torch.Tensor], threshold: float = SATURATION_THRESHOLD) -> torch.Tensor | None:
    """Share of all units (over every activation tensor) with |value| > threshold; None if there are none."""
    if not activations:
        return None
    saturated = sum((a.abs() > threshold).sum() for a in activations.values())
    total = sum(a.numel() for a in activations.values())
    return saturated.float() / total
