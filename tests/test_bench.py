"""Smoke tests of ``archlab bench decoder`` at a tiny size (1 timed round) and of the timing helpers."""
from __future__ import annotations

import re

import pytest
import torch

from framework.bench import run_bench
from framework.bench.common import Column, Timing, format_table, paired_ratio, quartiles, time_interleaved

pytest.importorskip("transformers")

from framework.bench.common import count_params, verdict_vs_hf
from plugins.decoder.bench.decoder import (  # noqa: E402
    BenchConfig, Size, flops_per_token, main, parse_args, run,
)

TINY = ["--sizes", "32x2x4", "--batch", "2", "--seq", "16", "--vocab", "64", "--steps", "1", "--warmup", "1",
        "--matmul-size", "64", "--device", "cpu"]
MODELS = ["gpt (ours)", "HF GPT2LMHeadModel (sdpa)", "llama (ours)", "HF LlamaForCausalLM (sdpa)"]


def tiny_config(**overrides) -> BenchConfig:
    base = dict(sizes=[Size(32, 2, 4)], batch=2, seq=16, vocab=64, steps=2, warmup=1, matmul_size=64, device="cpu")
    return BenchConfig(**(base | overrides))


def test_run_returns_one_matched_row_per_model_and_dtype() -> None:
    rows = run(tiny_config())
    assert [(r["model"], r["dtype"]) for r in rows] == [
        (m, d) for arch in ("gpt", "llama") for d in ("fp32", "bf16") for m in MODELS if arch in m.lower()
    ]
    for r in rows:
        assert r["size"] == "d32 L2 H4/2"
        assert r["params_match"], r  # ours and HF built at the same size
        assert r["tokens_per_s"] > 0 and r["seconds_per_step"] > 0
        assert 0 < r["mfu"] and r["peak_flops"] > 0
        assert r["ratio_vs_hf"] > 0 and r["median_ratio"] > 0
        if r["impl"] == "hf":
            assert r["ratio_vs_hf"] == 1.0 and r["verdict"] == "baseline"
        else:
            assert r["verdict"].startswith(("meets target", "parity within noise", "BELOW target"))
            assert re.fullmatch(r"\d+\.\d\d-\d+\.\d\d", r["ratio_iqr"])
    by = {(r["arch"], r["impl"], r["dtype"]): r for r in rows}
    for arch in ("gpt", "llama"):
        assert by[arch, "ours", "fp32"]["params"] == by[arch, "hf", "fp32"]["params"]
        assert by[arch, "ours", "fp32"]["n_params"] == by[arch, "hf", "fp32"]["n_params"]
    # GPT-2 at d=32, L=2, vocab 64, 16 positions: 12*d^2+13*d per block, + final LN + tied 64x32 head.
    d, layers = 32, 2
    assert by["gpt", "ours", "fp32"]["n_params"] == layers * (12 * d * d + 13 * d) + 2 * d + 64 * d
    assert by["gpt", "ours", "fp32"]["params"] == by["gpt", "ours", "fp32"]["n_params"] + 16 * d


def test_cli_prints_table_with_ratio_and_mfu_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_bench(["decoder", *TINY]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("size"))
    for column in ("model", "dtype", "params", "tokens/s", "vs HF", "IQR", "tok/s ratio", "MFU", "verdict"):
        assert column in header
    assert 'attn_implementation="sdpa"' in out
    for model in MODELS:
        for dtype in ("fp32", "bf16"):
            assert re.search(rf"d32 L2 H4/2\s+{re.escape(model)}\s+{dtype}\s", out), (model, dtype)
    ours_row = r"\d+\.\d\dx\s+\d+\.\d\d-\d+\.\d\d\s+\d+\.\d\dx\s+\d+\.\d%\s+(meets target|parity within noise|BELOW target)"
    assert len(re.findall(ours_row, out)) == 4
    assert len(re.findall(r"1\.00x\s+-\s+1\.00x\s+\d+\.\d%\s+baseline", out)) == 4  # HF rows
    assert re.search(r"matmul peak measured in the run \(d32 L2 H4/2\): fp32 [\d,]+ GFLOP/s, bf16 [\d,]+ GFLOP/s", out)
    assert out.strip().splitlines()[-1].startswith("verdict: ")


def test_main_single_dtype_and_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY, "--dtype", "fp32", "--models", "llama"]) == 0
    out = capsys.readouterr().out
    assert "llama (ours)" in out and "GPT2LMHeadModel" not in out and "bf16 " not in out


def test_arguments() -> None:
    cfg = parse_args(["--sizes", "256x4x8, 512x8x8x2", "--dtype", "bf16"])
    assert cfg.sizes == [Size(256, 4, 8), Size(512, 8, 8, 2)] and cfg.dtypes == ("bf16",)
    assert cfg.sizes[0].kv_heads == 4 and cfg.sizes[1].kv_heads == 2
    assert parse_args(["--d-model", "128", "--layers", "2"]).sizes == [Size(128, 2, 8)]
    for bad in (["--sizes", "256x4"], ["--dtype", "fp8"], ["--models", "mamba"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_flops_and_param_counting() -> None:
    emb, head = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # tied: counted once overall, and inside N as the output projection
    model = torch.nn.ModuleDict(dict(emb=emb, pos=torch.nn.Embedding(3, 4), mid=torch.nn.Linear(4, 4), head=head))
    assert count_params(model) == (40 + 12 + 20, 40 + 20)
    assert flops_per_token(1000, Size(64, 2, 4), seq=8) == 6 * 1000 + 12 * 2 * 64 * 8


def test_time_interleaved_rotates_order_and_pairs_rounds() -> None:
    calls: list[str] = []
    fns = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    timings = time_interleaved(fns, torch.device("cpu"), rounds=3, warmup=1)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert all(len(t.seconds) == 3 for t in timings.values())
    assert paired_ratio(Timing([2.0, 4.0, 9.0]), Timing([1.0, 1.0, 3.0])) == 3.0
    assert Timing([1.0, 2.0, 3.0]).spread == 1.0
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 4.0) and quartiles([0.7]) == (0.7, 0.7)


def test_verdicts() -> None:
    assert verdict_vs_hf(None, None, matched=True) == "baseline"
    assert verdict_vs_hf(1.05, (1.0, 1.1), matched=True).startswith("meets target (1.05x")
    assert verdict_vs_hf(0.99, (0.95, 1.02), matched=True).startswith("parity within noise")
    assert verdict_vs_hf(0.90, (0.85, 0.95), matched=True) == "BELOW target: 10% slower than HF"
    assert verdict_vs_hf(1.5, (1.4, 1.6), matched=False).startswith("PARAM COUNTS DIFFER")


def test_format_table() -> None:
    text = format_table([dict(a="x", b=1.5), dict(a="long", b=None)],
                        [Column("a", "name", align="<"), Column("b", "val", "{:.1f}")])
    assert text.splitlines() == ["name  val", "----  ---", "x     1.5", "long    -"]
