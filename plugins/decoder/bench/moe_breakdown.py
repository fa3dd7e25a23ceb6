"""``archlab bench moe --breakdown``: where the MoE layer's time beyond the dense MLP goes, one stage at a time.

Part of the ``moe`` benchmark (``moe.py`` beside it); not an entry point of its own.

Every layer variant runs forward + backward to the weights and the input on the same tokens, with the routing
computed once beforehand, except in the full layer:
  experts      the grouped expert FFNs on rows already in expert order (grouped matmuls + SwiGLU)
  +dispatch    gathering the tokens into expert order and adding the outputs back (index_select / index_add)
  +gates       the routing weights scaling each expert output, with their gradient
  full layer   + router, top-k, sort, balance and z losses, statistics: ``MoEFeedForward`` as it trains
  dense        the dense MLP with the same active parameters (baseline)
The step from one row to the next is what that stage costs. The model rows time forward + backward without
the optimizer step, so the train-step ratio can be split into the layers and AdamW over all the parameters.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from framework.bench.common import autocast

STAGES = ("experts", "+dispatch", "+gates", "full layer")


def backward_step(forward: Callable[[], tuple[torch.Tensor, ...]], grads: Sequence[torch.Tensor],
                  modules: Sequence[nn.Module], inputs: Sequence[torch.Tensor], device: torch.device,
                  dtype: str) -> Callable[[], None]:
    """A step: clear the gradients of ``modules`` and ``inputs``, ``forward()`` under autocast, then each output
    back-propagates its upstream gradient itself (no loss product, whose size would differ per stage)."""
    def step() -> None:
        for m in modules:
            m.zero_grad(set_to_none=True)
        for t in inputs:
            t.grad = None
        with autocast(device, dtype):
            outs = forward()
        torch.autograd.backward(outs, [g.to(o.dtype) for o, g in zip(outs, grads)])
    return step


def layer_stage_steps(ours: nn.Module, dense: nn.Module, x: torch.Tensor, grad: torch.Tensor, device: torch.device,
                      dtype: str) -> dict[str, Callable[[], None]]:
    """Step functions for the stages above and the dense baseline; x (1, N, C) requires grad, grad (1, N, C) is
    the upstream gradient."""
    n, c = x.shape[-2], x.shape[-1]
    with torch.no_grad(), autocast(device, dtype):
        routing = ours.route(ours.router(x.detach().reshape(n, c)), None)
    idx, counts = routing.token_idx, routing.counts
    rows = x.detach().reshape(n, c).index_select(0, idx).requires_grad_()  # (M, C) already in expert order
    gate = routing.gate.detach().clone().requires_grad_()

    def step(forward: Callable[[], tuple[torch.Tensor, ...]], *grads: torch.Tensor) -> Callable[[], None]:
        return backward_step(forward, grads, (ours, dense), (x, rows, gate), device, dtype)

    def dispatched(scale: bool) -> tuple[torch.Tensor]:
        ys = ours.experts(x.reshape(n, c).index_select(0, idx), counts)
        if scale:
            ys = ys * gate.unsqueeze(-1).to(ys.dtype)
        return (torch.zeros((n, c), dtype=ys.dtype, device=x.device).index_add_(0, idx, ys),)

    def full() -> tuple[torch.Tensor, torch.Tensor]:
        out = ours(x)
        return out.output, out.aux_loss

    flat_grad = grad.reshape(n, c)
    return dict(zip(STAGES + ("dense",), (
        step(lambda: (ours.experts(rows, counts),), flat_grad.index_select(0, idx)),
        step(lambda: dispatched(False), flat_grad),
        step(lambda: dispatched(True), flat_grad),
        step(full, grad, grad.new_ones(())),
        step(lambda: (dense(x),), grad),
    )))


def stage_summary(rows: list[dict]) -> list[str]:
    """'experts 1.08x dense, +dispatch +0.02x, ...' from the breakdown rows (time vs dense, medians)."""
    by = {r["variant"]: r["time_vs_baseline"] for r in rows if r["group"] == "breakdown"}
    if not all(s in by for s in STAGES):
        return []
    parts = [f"experts {by['experts']:.2f}x"]
    parts += [f"{b} {by[b] - by[a]:+.2f}x" for a, b in zip(STAGES, STAGES[1:])]
    line = "breakdown (time vs dense MLP, each stage's increment): " + ", ".join(parts)
    model = {r["variant"]: r for r in rows if r["group"] == "model fwd+bwd"}
    if "moe" in model:
        line += f"; model without the optimizer step: tokens/s ratio {1 / model['moe']['time_vs_baseline']:.2f}"
    return [line]
