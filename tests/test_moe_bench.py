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
