"""The MoE feed-forward layer (framework/nn/moe/layer.py): equivalences, capacity, aux losses, gradients, config."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from framework.config_schema import ConfigError, validate_config
from framework.nn import GatedMLP, MLP
from framework.nn.moe import MoEConfig, MoEFeedForward, capacity, load_balance_loss, router_z_loss, top_experts

D, H = 16, 32


def layer(**kw) -> MoEFeedForward:
    m = MoEFeedForward(D, MoEConfig(**kw), d_ff=H)
    m.init_weights(0.2)  # larger than the model's 0.02 so routing and outputs are far from ties
    return m


def reference(m: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, combined by the top-k gates: no dispatch at all. x: (N, C)."""
    logits = m.router(x)
    if m.cfg.softmax_order == "before_topk":
        gate, idx = logits.softmax(-1).topk(m.cfg.top_k, -1)
    else:
        top, idx = logits.topk(m.cfg.top_k, -1)
        gate = top.softmax(-1)
    all_out = torch.stack([m.experts.run_expert(i, x) for i in range(len(m.experts))], 1)  # (N, E, C)
    picked = all_out.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))  # (N, k, C)
    out = (picked * gate[..., None]).sum(1)
    return out + (m.shared(x) if m.shared is not None else 0)


# ---- equivalences --------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["swiglu", "gelu"])
@pytest.mark.parametrize("order", ["before_topk", "after_topk"])
def test_one_expert_top1_equals_dense_ffn(activation: str, order: str) -> None:
    m = layer(n_experts=1, top_k=1, activation=activation, softmax_order=order)
    dense = GatedMLP(D, H, "silu", bias=False) if activation == "swiglu" else MLP(D, H, "gelu", bias=False)
    with torch.no_grad():  # expert weights are stacked (E, out, in) in nn.Linear's layout
        if activation == "swiglu":
            dense.gate_proj.weight.copy_(m.experts.gate_proj[0])
        dense.up_proj.weight.copy_(m.experts.up_proj[0])
        dense.down_proj.weight.copy_(m.experts.down_proj[0])
    x = torch.randn(3, 7, D)
    torch.testing.assert_close(m(x).output, dense(x))


@pytest.mark.parametrize("top_k", [1, 2, 3])
@pytest.mark.parametrize("order", ["before_topk", "after_topk"])
@pytest.mark.parametrize("shared", [0, 2])
def test_dispatch_equals_every_expert_on_every_token(top_k: int, order: str, shared: int) -> None:
    m = layer(n_experts=5, top_k=top_k, softmax_order=order, n_shared_experts=shared)
    x = torch.randn(2, 9, D)
    torch.testing.assert_close(m(x).output.reshape(-1, D), reference(m, x.reshape(-1, D)))


def test_gates_follow_softmax_order() -> None:
    x = torch.randn(1, 40, D)
    after = layer(n_experts=4, top_k=2, softmax_order="after_topk")
    before = layer(n_experts=4, top_k=2, softmax_order="before_topk")
    before.load_state_dict(after.state_dict())
    out_a, out_b = after(x), before(x)
    probs = out_a.router_logits.softmax(-1)
    top2 = probs.topk(2, -1).values
    # before_topk: gate = full-softmax prob (gates of a token sum to < 1); after_topk: renormalised.
    ra, rb = reference(after, x[0]), reference(before, x[0])
    torch.testing.assert_close(out_a.output[0], ra)
    torch.testing.assert_close(out_b.output[0], rb)
    assert (top2.sum(-1) < 1).all() and not torch.allclose(out_a.output, out_b.output)


def test_padding_is_not_routed_and_does_not_change_real_tokens() -> None:
    m = layer(n_experts=4, top_k=2)
    x = torch.randn(2, 6, D)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    out = m(x, mask)
    assert (out.output[1, :2] == 0).all()
    torch.testing.assert_close(out.output[1, 2:], m(x[1:, 2:]).output[0])
    assert int(out.stats["tokens_per_expert"].sum()) == 10 * 2


def test_parity_with_hugging_face_mixtral_sparse_moe_block() -> None:
    mixtral = pytest.importorskip("transformers.models.mixtral.modeling_mixtral")
    from transformers import MixtralConfig

    e, k = 4, 2
    hf = mixtral.MixtralSparseMoeBlock(MixtralConfig(hidden_size=D, intermediate_size=H, num_local_experts=e,
                                                     num_experts_per_tok=k, router_jitter_noise=0.0)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(std=0.2)
    ours = MoEFeedForward(D, MoEConfig(n_experts=e, top_k=k, softmax_order="after_topk", dropless=True), d_ff=H).eval()
    with torch.no_grad():  # HF stores experts as 3-D tensors: gate_up (E, 2H, C) = [gate; up], down (E, C, H)
        ours.router.weight.weight.copy_(hf.gate.weight)
        ours.experts.gate_proj.copy_(hf.experts.gate_up_proj[:, :H])
        ours.experts.up_proj.copy_(hf.experts.gate_up_proj[:, H:])
        ours.experts.down_proj.copy_(hf.experts.down_proj)
    x = torch.randn(2, 11, D)
    hf_logits = hf.gate(x.reshape(-1, D))[0]
    out = ours(x)
    torch.testing.assert_close(out.router_logits, hf_logits)
    torch.testing.assert_close(out.output, hf(x.clone()))
    # Our balance loss normalises f to sum 1 (minimum 1); Hugging Face's f sums to k.
    hf_balance = mixtral.load_balancing_loss_func((hf_logits,), e, k)
    torch.testing.assert_close(out.stats["balance_loss"] * k, hf_balance)


# ---- capacity and dropping -----------------------------------------------------------------------


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("factor", [0.5, 1.0, 1.25])
def test_capacity_bounds_every_expert_and_dropped_tokens_pass_through(top_k: int, factor: float) -> None:
    e, n = 4, 64
    m = layer(n_experts=e, top_k=top_k, dropless=False, capacity_factor_train=factor, softmax_order="before_topk")
    with torch.no_grad():  # skew the router so expert 0 is over-subscribed (inputs are positive)
        m.router.weight.weight[0] += 0.3
    x = torch.randn(1, n, D).abs()
    out = m(x)
    cap = math.ceil(factor * n * top_k / e)
    assert cap == capacity(n, top_k, e, factor)
    processed = out.stats["tokens_per_expert"]
    assert int(processed.max()) <= cap

    # Count by hand: each expert keeps its first `cap` requests, first choices before second ones.
    idx = out.router_logits.topk(top_k, -1).indices  # (N, k)
    kept = torch.zeros(n, top_k, dtype=torch.bool)
    for expert in range(e):
        queue = [(s, t) for s in range(top_k) for t in range(n) if idx[t, s] == expert]
        for s, t in queue[:cap]:
            kept[t, s] = True
    assert processed.tolist() == [min(int((idx == j).sum()), cap) for j in range(e)]
    torch.testing.assert_close(out.stats["dropped_frac"], torch.tensor(1 - kept.float().mean().item()))
    assert out.stats["dropped_frac"] > 0  # the skew makes the test meaningful

    # Tokens with every assignment dropped get exactly 0: the block's residual passes them unchanged.
    dropped = ~kept.any(-1)
    assert (out.output[0, dropped] == 0).all()
    probs = out.router_logits.softmax(-1)
    expected = torch.zeros(n, D)
    for t in range(n):
        for s in range(top_k):
            if kept[t, s]:
                j = int(idx[t, s])
                expected[t] += probs[t, j] * m.experts.run_expert(j, x[0, t])
    torch.testing.assert_close(out.output[0], expected)


def test_eval_uses_its_own_capacity_factor() -> None:
    m = layer(n_experts=4, top_k=1, dropless=False, capacity_factor_train=0.25, capacity_factor_eval=4.0)
    x = torch.randn(1, 32, D)
    assert m.train()(x).stats["dropped_frac"] > 0
    assert m.eval()(x).stats["dropped_frac"] == 0


def test_dropless_never_drops() -> None:
    m = layer(n_experts=4, top_k=2, dropless=True, capacity_factor_train=0.1)
    with torch.no_grad():
        m.router.weight.weight[0] += 1.0
    out = m(torch.randn(1, 50, D))
    assert out.stats["dropped_frac"] == 0 and int(out.stats["tokens_per_expert"].sum()) == 100


def test_expert_choice_gives_every_expert_its_capacity() -> None:
    e, n, k, factor = 4, 24, 2, 1.0
    m = layer(n_experts=e, top_k=k, router="expert_choice", dropless=False, capacity_factor_train=factor)
    x = torch.randn(1, n, D)
    out = m(x)
    cap = capacity(n, k, e, factor)
    assert out.stats["tokens_per_expert"].tolist() == [cap] * e
    probs = out.router_logits.softmax(-1)  # (N, E)
    chosen = probs.t().topk(cap, -1).indices  # (E, C)
    expected = torch.zeros(n, D)
    picked = torch.zeros(n, dtype=torch.bool)
    for j in range(e):
        for t in chosen[j].tolist():
            expected[t] += probs[t, j] * m.experts.run_expert(j, x[0, t])
            picked[t] = True
    torch.testing.assert_close(out.output[0], expected)
    torch.testing.assert_close(out.stats["dropped_frac"], 1 - picked.float().mean())


# ---- auxiliary losses ----------------------------------------------------------------------------


def test_balance_loss_matches_its_formula_for_a_fixed_router() -> None:
    e, k = 4, 2
    m = layer(n_experts=e, top_k=k, balance_loss_weight=0.01, z_loss_weight=0.001)
    x = torch.randn(1, 10, D)
    out = m(x)
    logits = m.router(x[0])
    probs = logits.softmax(-1)
    idx = logits.topk(k, -1).indices
    f = torch.tensor([(idx == i).sum().item() / (10 * k) for i in range(e)])
    by_hand = e * sum(f[i] * probs[:, i].mean() for i in range(e))
    z = (torch.logsumexp(logits, -1) ** 2).mean()
    torch.testing.assert_close(out.stats["balance_loss"], by_hand)
    torch.testing.assert_close(out.stats["z_loss"], z)
    torch.testing.assert_close(out.aux_loss, 0.01 * by_hand + 0.001 * z)


@pytest.mark.parametrize("top_k", [1, 2])
def test_balance_loss_is_one_times_weight_under_a_uniform_router(top_k: int) -> None:
    m = layer(n_experts=4, top_k=top_k, balance_loss_weight=0.01, z_loss_weight=0.0)
    with torch.no_grad():
        m.router.weight.weight.zero_()
    out = m(torch.randn(2, 8, D))
    torch.testing.assert_close(out.aux_loss, torch.tensor(0.01))
    # ... and no router does better when the load is balanced: E * sum f_i P_i >= 1 for uniform f.
    f_uniform = torch.full((4,), 5)
    for _ in range(20):
        probs = torch.randn(16, 4).softmax(-1)
        assert load_balance_loss(probs, f_uniform) >= 1 - 1e-6
    torch.testing.assert_close(router_z_loss(torch.zeros(3, 4)), torch.tensor(math.log(4) ** 2))


def test_collapsed_router_scores_worse_than_balanced() -> None:
    probs = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).repeat(8, 1)
    assert load_balance_loss(probs, torch.tensor([8, 0, 0, 0])) > 3.5  # ~E * 0.97


# ---- gradients -----------------------------------------------------------------------------------


@pytest.mark.parametrize("router", ["token_choice", "expert_choice"])
def test_gradient_reaches_router_and_every_expert_with_tokens(router: str) -> None:
    m = layer(n_experts=6, top_k=2, router=router, dropless=router == "token_choice", n_shared_experts=1)
    if router == "token_choice":  # expert 5 never wins: it must get no gradient, the others must
        with torch.no_grad():
            m.router.weight.weight[5] = -10 * m.router.weight.weight[0].abs().sum()
    x = torch.randn(2, 12, D)
    out = m(x.abs() + 0.1)
    (out.output.pow(2).sum() + out.aux_loss).backward()
    assert m.router.weight.weight.grad.abs().sum() > 0
    for i in range(len(m.experts)):  # stacked weights: expert i's gradient is slice i of each
        got = out.stats["tokens_per_expert"][i] > 0
        grads = [p.grad[i] for p in m.experts.parameters()]
        if got:
            assert all(g.abs().sum() > 0 for g in grads), i
        else:
            assert all(g.abs().sum() == 0 for g in grads), i
    assert all(p.grad.abs().sum() > 0 for p in m.shared.parameters())
    if router == "token_choice":
        assert out.stats["tokens_per_expert"][5] == 0


def test_stats_are_detached_values() -> None:
    out = layer(n_experts=4, top_k=2)(torch.randn(2, 5, D))
    assert set(out.stats) == {"load", "tokens_per_expert", "dropped_frac", "balance_loss", "z_loss",
                              "router_confidence", "coselect", "max_load"}
    assert all(not v.requires_grad for v in out.stats.values())
    torch.testing.assert_close(out.stats["load"].sum(), torch.tensor(1.0))
    torch.testing.assert_close(out.stats["coselect"].diagonal(), out.stats["load"] * 2)  # k=2: diag = P(chosen)
    assert 0.25 <= out.stats["router_confidence"] <= 1


def test_bf16_autocast_matches_fp32_within_bf16_precision() -> None:
    m = layer(n_experts=4, top_k=2)
    x = torch.randn(2, 5, D)
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    assert out.output.dtype == x.dtype
    torch.testing.assert_close(out.router_logits, ref.router_logits)  # the router runs in fp32 regardless
    torch.testing.assert_close(out.output, ref.output, atol=0.05, rtol=0.05)


# ---- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize("values, field", [
    ({"n_experts": 4, "top_k": 5}, "top_k"),
    ({"n_experts": 0}, "n_experts"),
    ({"top_k": 0}, "top_k"),
    ({"capacity_factor_train": 0.0}, "capacity_factor_train"),
    ({"capacity_factor_eval": -1.0}, "capacity_factor_eval"),
    ({"jitter": 1.5}, "jitter"),
    ({"n_shared_experts": -1}, "n_shared_experts"),
    ({"balance_loss_weight": -0.1}, "balance_loss_weight"),
    ({"router": "expert_choice"}, "dropless"),
    ({"router": "hash"}, "router"),
    ({"softmax_order": "never"}, "softmax_order"),
])
def test_invalid_config_fails_early_naming_the_field(values: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        validate_config(MoEConfig, values, owner="model.moe")


def test_one_expert_dense_equivalence_uses_functional_gelu() -> None:
    m = layer(n_experts=1, top_k=1, activation="gelu")
    x = torch.randn(4, D)
    e = m.experts
    torch.testing.assert_close(m(x[None]).output[0], F.linear(F.gelu(F.linear(x, e.up_proj[0])), e.down_proj[0]))


def test_fine_grained_experts_with_shared_expert() -> None:
    # DeepSeekMoE-style: many narrow experts, several per token, plus an always-on shared expert.
    m = MoEFeedForward(D, MoEConfig(n_experts=16, top_k=4, d_ff=8, n_shared_experts=1), d_ff=H)
    m.init_weights(0.2)
    assert m.d_ff == 8 and m.shared.down_proj.in_features == 8
    x = torch.randn(2, 9, D)
    torch.testing.assert_close(m(x).output.reshape(-1, D), reference(m, x.reshape(-1, D)))
    assert m.inactive_params() == 12 * 3 * D * 8


def test_jitter_only_while_training() -> None:
    m = layer(n_experts=4, top_k=2, jitter=0.5)
    x = torch.randn(1, 16, D)
    assert not torch.equal(m.train()(x).router_logits, m(x).router_logits)  # fresh noise each call
    torch.testing.assert_close(m.eval()(x).router_logits, m.router.weight(x[0]).float())


@pytest.mark.parametrize("kw, expected", [
    (dict(dropless=True), False),
    (dict(dropless=False), True),
    (dict(router="expert_choice", dropless=False), True),
])
def test_batch_dependence_is_declared_for_capacity_routing(kw: dict, expected: bool) -> None:
    """Capacity makes a token's output depend on the other tokens of the batch; the contract kit reads this."""
    m = layer(n_experts=4, top_k=1, capacity_factor_eval=0.5, **kw).eval()
    assert m.batch_dependent is expected
    if kw.get("router") == "expert_choice":
        return
    x = torch.randn(1, 8, D)
    x[0, :7] = x[0, 7]  # tokens 0..6 copy token 7: same expert, and earlier tokens have priority
    alone = m(x[:, 7:]).output[0, 0]  # capacity 1: token 7 is computed
    together = m(x).output[0, 7]  # capacity ceil(0.5 * 8 / 4) = 1, taken by token 0: token 7 dropped
    assert torch.allclose(alone, together) is not expected


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_top_experts_matches_topk_best_first(k: int) -> None:
    probs = torch.randn(7, 300).softmax(0)  # (E, N) expert-major, as the router lays it out
    picked = top_experts(probs, k)
    assert picked.shape == (k, 300)
    torch.testing.assert_close(probs.gather(0, picked), probs.topk(k, dim=0).values)  # the k largest, in order


def test_router_logits_are_expert_major_and_equal_a_linear_layer() -> None:
    m = layer(n_experts=4, top_k=2)
    x = torch.randn(10, D)
    logits = m.router(x)
    assert logits.shape == (10, 4) and logits.t().is_contiguous()  # reductions over experts run along tokens
    torch.testing.assert_close(logits, F.linear(x, m.router.weight.weight))
