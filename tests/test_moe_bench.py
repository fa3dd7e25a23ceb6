"""Smoke test of ``archlab bench moe`` at a tiny size (1 timed round)."""
from __future__ import annotations

import pytest

from framework.bench import run_bench

pytest.importorskip("transformers")

from plugins.decoder.bench.moe import BenchConfig, parse_args, run, summary  # noqa: E402

TINY = dict(n_experts=4, top_k=2, d_model=16, hidden=32, tokens=32, steps=1, warmup=1, layers=1, heads=2,
            batch=2, seq=8, vocab=32, device="cpu")


def test_run_rows_and_matched_active_params() -> None:
    rows = run(BenchConfig(**TINY))
    by = {(r["group"], r["variant"]): r for r in rows}
    layer_rows = {(g, v) for g in ("layer", "layer+dx") for v in ("ours", "hf eager", "hf grouped_mm", "dense")}
    assert set(by) == layer_rows | {("model", "moe"), ("model", "dense gpt")}
    # Same parameters as HF's block; the dense MLP has the MoE's active parameters (router aside).
    assert by["layer", "ours"]["params"] == by["layer", "hf eager"]["params"]
    assert by["layer", "ours"]["active_params"] == by["layer", "dense"]["params"] + 4 * 16
    assert by["model", "moe"]["active_params"] == by["model", "dense gpt"]["params"] + 4 * 16  # 1 layer: + router
    assert by["layer", "dense"]["time_vs_baseline"] == 1.0 and all(r["ms"] > 0 for r in rows)
    lines = summary(rows)
    assert [line.split(":")[0] for line in lines] == ["layer", "layer", "layer+dx", "layer+dx", "moe model vs dense gpt (same active params)"]
    assert "faster than hf eager" in lines[0] and "vs dense MLP" in lines[1]


def test_the_deepseek_router_times_hf_deepseek_v3_moe_holding_our_weights() -> None:
    """--router deepseek: ours is DeepSeekMoE (sigmoid, 1 shared expert, 2 groups), HF's DeepseekV3MoE holds the same
    weights (so the same outputs: the two do the same work), the dense MLP has top-k + shared experts' width."""
    import torch

    from plugins.decoder.bench.moe import build_layers

    cfg = BenchConfig(**{**TINY, "n_experts": 8, "top_k": 2}, router="deepseek", shared=1, groups=2, topk_groups=1,
                      hf_impls=("eager",), model=False)
    layers = build_layers(cfg, torch.device("cpu"))
    x = torch.randn(1, 12, 16)
    with torch.no_grad():
        torch.testing.assert_close(layers["hf eager"](x), layers["ours"](x).output, rtol=1e-5, atol=1e-6)
    assert layers["dense"].up_proj.out_features == (2 + 1) * 32
    rows = run(cfg)
    by = {(r["group"], r["variant"]): r for r in rows}
    assert by["layer", "ours"]["params"] == by["layer", "hf eager"]["params"]  # the bias is a buffer on both sides
    assert by["layer", "ours"]["active_params"] == by["layer", "dense"]["params"] + 8 * 16  # + the router
    lines = summary(rows, "deepseek")
    assert "target >= 2.0x vs the fastest" in lines[0] and "target <= 1.4x" in lines[1]


def test_cli_prints_table(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--n-experts", "4", "--d-model", "16", "--hidden", "32", "--tokens", "32", "--steps", "1", "--warmup", "1",
            "--no-model", "--hf-impls", "eager", "--device", "cpu"]
    assert run_bench(["moe", *args]) == 0
    out = capsys.readouterr().out
    assert "hf eager" in out and "time vs baseline" in out and "dense gpt" not in out
    with pytest.raises(SystemExit):
        parse_args(["--top-k", "9"])


def test_breakdown_times_each_stage_and_the_models_without_optimizer() -> None:
    rows = run(BenchConfig(**TINY, breakdown=True, hf_impls=(), input_grad=(True,)))
    stages = [r["variant"] for r in rows if r["group"] == "breakdown"]
    assert stages == ["experts", "+dispatch", "+gates", "full layer", "dense"]
    assert {r["variant"] for r in rows if r["group"] == "model fwd+bwd"} == {"moe", "dense gpt"}
    line = summary(rows)[-1]
    assert line.startswith("breakdown") and "+gates" in line and "without the optimizer step" in line


def test_layer_step_takes_a_block_that_returns_a_tuple() -> None:
    """transformers 4.x's MixtralSparseMoeBlock returns (hidden states, router logits)."""
    import torch
    from torch import nn

    from plugins.decoder.bench.moe import layer_step

    class TupleBlock(nn.Linear):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return super().forward(x), x.new_zeros(1)

    block, x = TupleBlock(4, 4), torch.randn(1, 3, 4, requires_grad=True)
    layer_step("hf eager", block, x, torch.ones(1, 3, 4), torch.device("cpu"), "fp32")()
    assert block.weight.grad is not None and x.grad is not None
