"""Stacked experts (framework/nn/moe/experts.py): the grouped-matmul path equals expert-by-expert FFNs."""
from __future__ import annotations

import pytest
import torch

from framework.nn import GatedMLP, MLP
from framework.nn.moe import GroupedExperts, MoEConfig, MoEFeedForward

D, H = 16, 32


def experts(activation: str, bias: bool, impl: str, d_ff: int = H) -> GroupedExperts:
    torch.manual_seed(0)
    return GroupedExperts(4, D, d_ff, activation, bias, impl=impl)


def run_both(activation: str, bias: bool, counts: list[int], pad_rows_to: int | None = None):
    """Outputs and gradients (input and every weight) of the grouped and the loop path on the same rows."""
    x = torch.randn(sum(counts), D)
    g = torch.randn(sum(counts), D)
    results = []
    for impl in ("grouped_mm", "loop"):
        m = experts(activation, bias, impl)
        m.pad_rows_to = pad_rows_to
        xi = x.clone().requires_grad_()
        y = m(xi, torch.tensor(counts))
        (y * g).sum().backward()
        results.append((y, xi.grad, {n: p.grad for n, p in m.named_parameters()}))
    return results


@pytest.mark.parametrize("pad_rows_to", [None, 4], ids=["unpadded", "padded"])
@pytest.mark.parametrize("activation", ["swiglu", "gelu"])
@pytest.mark.parametrize("bias", [False, True])
def test_grouped_path_equals_loop_with_gradients(activation: str, bias: bool, pad_rows_to: int | None) -> None:
    """Also with each expert's rows padded to a multiple of 4 (what bf16 on CPU does, with 64): pad rows
    change neither the outputs nor any gradient (biases included)."""
    (y1, gx1, gw1), (y2, gx2, gw2) = run_both(activation, bias, [5, 0, 7, 3], pad_rows_to)  # expert 1: nothing
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(gx1, gx2)
    assert gw1.keys() == gw2.keys()
    for name in gw1:
        torch.testing.assert_close(gw1[name], gw2[name], msg=name)
        assert gw1[name][1].abs().sum() == 0, name  # the idle expert gets a zero gradient


def test_rows_go_to_their_own_expert() -> None:
    m = experts("swiglu", True, "auto")
    counts = [2, 3, 0, 4]
    x = torch.randn(9, D)
    y = m(x, torch.tensor(counts))
    starts = [0, 2, 5, 5]
    for i, (start, n) in enumerate(zip(starts, counts)):
        torch.testing.assert_close(y[start:start + n], m.run_expert(i, x[start:start + n]))


def test_bf16_autocast_matches_the_loop() -> None:
    counts = torch.tensor([6, 2, 0, 8])
    x = torch.randn(16, D)
    outs = []
    for impl in ("grouped_mm", "loop"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(experts("swiglu", False, impl)(x, counts))
    assert outs[0].dtype == torch.bfloat16
    torch.testing.assert_close(outs[0].float(), outs[1].float(), atol=2e-2, rtol=2e-2)


def test_unaligned_width_falls_back_and_stays_exact() -> None:
    m = experts("swiglu", False, "auto", d_ff=6)  # 6 floats = 24-byte rows: not a grouped_mm layout
    x = torch.randn(7, D)
    y = m(x, torch.tensor([3, 0, 4, 0]))
    torch.testing.assert_close(y, torch.cat([m.run_expert(0, x[:3]), m.run_expert(2, x[3:])]))


def test_empty_input_returns_empty() -> None:
    y = experts("gelu", False, "auto")(torch.randn(0, D), torch.zeros(4, dtype=torch.long))
    assert y.shape == (0, D)


@pytest.mark.parametrize("activation, dense_cls", [("swiglu", GatedMLP), ("gelu", MLP)])
def test_upcycled_single_expert_layer_equals_the_dense_ffn(activation: str, dense_cls: type) -> None:
    dense = dense_cls(D, H, "silu" if activation == "swiglu" else "gelu", bias=True)
    layer = MoEFeedForward(D, MoEConfig(n_experts=1, top_k=1, activation=activation, bias=True), d_ff=H)
    layer.upcycle_(dense)
    x = torch.randn(2, 5, D)
    torch.testing.assert_close(layer(x).output, dense(x))


def test_loading_the_wrong_kind_of_ffn_names_the_mismatch() -> None:
    with pytest.raises(ValueError, match="SwiGLU expert cannot take a MLP"):
        experts("swiglu", False, "auto").load_dense_(0, MLP(D, H, "gelu", bias=False))
    with pytest.raises(ValueError, match="bias"):
        experts("gelu", False, "auto").load_dense_(0, MLP(D, H, "gelu", bias=True))


def test_params_per_expert() -> None:
    assert experts("swiglu", True, "auto").params_per_expert() == 3 * D * H + 2 * H + D
    assert experts("gelu", False, "auto").params_per_expert() == 2 * D * H


def test_broadcast_output_gradient_backpropagates() -> None:
    """out.sum() hands grouped_mm's backward a stride-0 gradient, which it rejects: the module makes it dense."""
    grads = []
    for impl in ("grouped_mm", "loop"):
        m = experts("swiglu", False, impl)
        m(torch.ones(6, D), torch.tensor([2, 0, 3, 1])).sum().backward()
        grads.append(m.down_proj.grad)
    torch.testing.assert_close(grads[0], grads[1])
