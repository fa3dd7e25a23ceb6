"""Decoder stacks with MoE channel mixers: the moe, switch and mixtral presets, MoE every n-th layer, the
moe/... metrics, and composition with any other layer by config (``ffn=moe``, ``ffn_every``)."""
from __future__ import annotations

import pytest
import torch

import framework
from framework.config_schema import ConfigError
from framework.nn.moe import ExpertLoad, MoEFeedForward, normalised_entropy
from framework.registry import get_plugin, make_config
from framework.train import split_model_config, train
from framework.wandb_records import read_runs
from hydra_compose import FAST, compose_train

TINY = dict(vocab_size=32, d_model=16, n_layers=4, n_heads=2, max_seq_len=16, d_ff=24, position="rope",
            norm="rmsnorm", bias=False)
EVERY_2ND = dict(ffn="swiglu", ffn_every={"name": "moe", "every": 2, "offset": 1})  # Switch / GShard placement


def tiny_moe(**moe) -> torch.nn.Module:
    return framework.build_model("decoder", **TINY, ffn="moe", moe={"n_experts": 4, "top_k": 2, **moe})


def moe_layers(config) -> list[int]:  # noqa: ANN001
    return [i for i, spec in enumerate(config.channel_mixers) if spec.name == "moe"]


def test_presets_compose() -> None:
    plugin = framework.list_plugins()["decoder"]
    for preset in ("moe", "switch", "mixtral"):
        cfg = compose_train([f"model={preset}"])
        name, values = split_model_config(cfg)
        assert name == "decoder"
        config = make_config(name, **values)
        assert isinstance(plugin.build(config), torch.nn.Module)
    switch = make_config("decoder", **split_model_config(compose_train(["model=switch"]))[1])
    assert (switch.moe.top_k, switch.moe.capacity_factor_train, switch.moe.dropless) == (1, 1.25, False)
    assert moe_layers(switch) == [1, 3] and switch.moe.softmax_order == "before_topk"
    mixtral = make_config("decoder", **split_model_config(compose_train(["model=mixtral"]))[1])
    assert moe_layers(mixtral) == [0, 1, 2, 3]
    assert (mixtral.moe.n_experts, mixtral.moe.top_k, mixtral.moe.dropless) == (8, 2, True)


@pytest.mark.parametrize("moe", [dict(), dict(top_k=1, dropless=False, softmax_order="before_topk"),
                                 dict(n_shared_experts=1, activation="gelu")])
def test_causal(moe: dict) -> None:
    # Capacity could let a later token evict an earlier one; with enough capacity token choice is causal.
    model = tiny_moe(capacity_factor_train=8.0, capacity_factor_eval=8.0, **moe).eval()
    x = torch.randint(0, 32, (2, 12))
    y = x.clone()
    y[:, 7:] = torch.randint(0, 32, (2, 5))
    torch.testing.assert_close(model(x).logits[:, :7], model(y).logits[:, :7])


def test_ffn_every_places_experts_and_stacks_stats() -> None:
    model = framework.build_model("decoder", **TINY, **EVERY_2ND, moe={"n_experts": 4, "top_k": 2})
    kinds = [isinstance(b.ffn, MoEFeedForward) for b in model.blocks]
    assert kinds == [False, True, False, True]
    out = model(torch.randint(0, 32, (2, 8)))
    assert out.stats["moe_load"].shape == (2, 4) and out.stats["moe_coselect"].shape == (2, 4, 4)
    assert out.stats["hist_moe/load"].shape == (4,) and out.stats["moe_dropped_frac"].shape == (2,)
    weights = 1e-2 * out.stats["moe_balance_loss"] + 1e-3 * out.stats["moe_z_loss"]
    torch.testing.assert_close(out.aux_loss, weights.sum())
    assert out.aux_loss.requires_grad


def test_param_counts_total_vs_active() -> None:
    model = tiny_moe()
    per_expert = 3 * 16 * 24  # SwiGLU: gate, up, down
    assert model.n_params_total == sum(p.numel() for p in model.parameters())
    assert model.n_params_total - model.n_params_active == 4 * (4 - 2) * per_expert  # 4 layers, E-k idle experts
    metrics = get_plugin("decoder").metrics(model.config)
    out = model(torch.randint(0, 32, (1, 8)))
    metrics["moe/params"].update(out.stats)
    assert metrics["moe/params"].compute() == {"total": model.n_params_total, "active": model.n_params_active}


def test_metrics_consume_stats_per_layer_and_mean() -> None:
    model = framework.build_model("decoder", **TINY, **EVERY_2ND, moe={"n_experts": 4, "top_k": 2})
    metrics = get_plugin("decoder").metrics(model.config)
    for _ in range(2):
        out = model(torch.randint(0, 32, (2, 8)))
        for m in metrics.values():
            m.update(out.stats)
    for name in ("balance_loss", "z_loss", "dropped_frac", "router_confidence", "load_entropy", "load_min",
                 "load_max", "load_cv", "coselect_entropy"):
        values = metrics[f"moe/{name}"].compute()
        assert set(values) == {"layer1", "layer3", "mean"}, name
    entropy = metrics["moe/load_entropy"].compute()["layer1"]
    assert 0 < entropy <= 1
    assert metrics["moe/load_min"].compute()["mean"] <= 0.25 <= metrics["moe/load_max"].compute()["mean"]


def test_load_summaries_by_hand() -> None:
    metric = {s: ExpertLoad(s, [0], 4) for s in ("entropy", "min", "max", "cv")}
    for load in ([0.4, 0.4, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3]):  # mean load: 0.3, 0.3, 0.2, 0.2
        for m in metric.values():
            m.update({"moe_load": torch.tensor([load])})
    mean = torch.tensor([0.3, 0.3, 0.2, 0.2])
    torch.testing.assert_close(metric["entropy"].compute()["layer0"], -(mean * mean.log()).sum() / torch.tensor(4.0).log())
    torch.testing.assert_close(metric["min"].compute()["layer0"], torch.tensor(0.2))
    torch.testing.assert_close(metric["max"].compute()["layer0"], torch.tensor(0.3))
    torch.testing.assert_close(metric["cv"].compute()["layer0"], torch.tensor(0.05 / 0.25))
    torch.testing.assert_close(normalised_entropy(torch.ones(8)), torch.tensor(1.0))
    assert normalised_entropy(torch.tensor([1.0, 0, 0])) < 1e-6


def test_generate_with_cache_matches_recompute() -> None:
    model = tiny_moe()
    prompt = torch.randint(0, 32, (2, 3))
    a = model.generate(prompt, 6, temperature=0.0, use_cache=True)
    b = model.generate(prompt, 6, temperature=0.0, use_cache=False)
    assert torch.equal(a, b)


def test_every_parameter_gets_a_gradient() -> None:
    model = tiny_moe(n_shared_experts=1)
    out = model(torch.randint(0, 32, (4, 16)))
    (out.logits.logsumexp(-1).mean() + out.aux_loss).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


@pytest.mark.parametrize("values, field", [
    ({"moe": {"top_k": 9}}, "top_k"), ({"moe": {"n_experts": 0}}, "n_experts"),
    ({"moe": {"capacity_factor_train": 0}}, "capacity_factor_train"),
    ({"ffn_every": {"name": "moe", "every": 2, "offset": 2}}, "offset"),
    ({"ffn_every": {"name": "moe", "every": 8, "offset": 5}}, "ffn_every.offset.*past the last layer"),
    ({"ffn_every": {"name": "mo", "every": 2, "offset": 1}}, "ffn_every.name: unknown channel mixer 'mo'.*'moe'"),
    ({"ffn_layers": ["moe", "mlp", "mlp"]}, "ffn_layers: a list of 3 mixers .* must divide it"),
    ({"moe": {"experts": 4}}, "experts"),
])
def test_invalid_config_fails_before_building(values: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make_config("decoder", **TINY | {"ffn": "moe"} | values)


# ---- MoE composed with other layers by config ----------------------------------------------------


def test_gpt_ffn_moe_with_one_expert_equals_gpt_swiglu() -> None:
    base = dict(vocab_size=32, d_model=16, n_layers=2, n_heads=2, max_seq_len=16, d_ff=24, bias=False)
    dense = framework.build_model("decoder", **base, ffn="swiglu")
    moe = framework.build_model("decoder", **base, ffn="moe", moe={"n_experts": 1, "top_k": 1})
    state = {k: v for k, v in dense.state_dict().items() if ".ffn." not in k}
    missing, unexpected = moe.load_state_dict(state, strict=False)
    assert all(".ffn." in k for k in missing) and not unexpected
    for moe_block, dense_block in zip(moe.blocks, dense.blocks):
        moe_block.ffn.upcycle_(dense_block.ffn)  # the one expert becomes the dense FFN
    x = torch.randint(0, 32, (2, 10))
    torch.testing.assert_close(moe(x).logits, dense(x).logits)


def test_gpt_ffn_moe_sums_aux_losses_and_reports_metrics() -> None:
    model = framework.build_model("decoder", vocab_size=32, d_model=16, n_layers=2, n_heads=2, max_seq_len=16,
                                  ffn="moe", moe={"n_experts": 4, "top_k": 1, "dropless": False})
    out = model(torch.randint(0, 32, (2, 8)))
    assert out.aux_loss > 0 and out.stats["moe_load"].shape == (2, 4)
    out.aux_loss.backward()
    assert all(b.ffn.router.weight.weight.grad is not None for b in model.blocks)
    metrics = get_plugin("decoder").metrics(model.config)
    for m in metrics.values():
        m.update(out.stats)
    assert set(metrics["moe/load_entropy"].compute()) == {"layer0", "layer1", "mean"}
    assert "coselect_entropy" not in str(list(metrics))  # top-1: no pairs


def test_gpt_moe_options_compose_from_the_command_line() -> None:
    cfg = compose_train(["model=llama", "model.ffn=moe", "model.moe.n_experts=4", "model.moe.top_k=1"])
    name, values = split_model_config(cfg)
    config = make_config(name, **values)
    assert config.ffn == "moe" and config.moe.n_experts == 4 and config.moe.top_k == 1


# ---- end to end ----------------------------------------------------------------------------------


def test_switch_trains_and_logs_moe_metrics_and_load_histogram(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train(FAST + ["model=switch", "data=synthetic", "logger=wandb", "callbacks=none",
                                "sample.prompt=null", "model.d_model=32", "model.n_layers=2",
                                "model.moe.n_experts=4"], tmp_path)
    metrics = train(cfg)["metrics"]
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
    for key in ("moe/load_entropy/layer1", "moe/load_entropy/mean", "moe/dropped_frac/layer1", "moe/load_cv/mean",
                "moe/balance_loss/mean", "moe/z_loss/mean", "moe/router_confidence/mean", "moe/params/active",
                "train/aux_loss"):
        assert key in metrics, (key, sorted(metrics))
    assert metrics["moe/params/active"] < metrics["moe/params/total"]
    (run,) = read_runs(tmp_path, wait_s=20)
    assert "moe/load" in run.media_keys()
    hist = run.media("moe/load")[0][1]
    assert len(hist["bins"]) == 5 and abs(sum(hist["values"]) - 1) < 1e-3  # 4 experts, load fractions
