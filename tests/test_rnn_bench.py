"""Smoke tests of ``archlab bench rnn`` at a tiny size (1 timed round)."""
from __future__ import annotations

import pytest

from framework.bench import run_bench
from plugins.decoder.bench.rnn import BenchConfig, build_variants, matmul_params, parse_args, run

TINY = dict(seqs=(24, 48), batch=2, gen_tokens=4, d_model=32, gpt_layers=2, n_heads=4, rnn_layers=2, vocab=64,
            steps=1, warmup=1, device="cpu")


def test_variants_have_similar_parameter_counts() -> None:
    models = build_variants(BenchConfig(**TINY))
    target = matmul_params(models["gpt"])
    for cell in ("lstm", "gru"):
        n = matmul_params(models[cell])
        assert target <= n <= 1.15 * target, (cell, n, target)
        assert models[cell].config.mixer == cell


def test_run_rows_ratios_and_state_growth() -> None:
    rows = run(BenchConfig(**TINY))
    assert [(r["seq"], r["arch"]) for r in rows] == [(s, a) for s in (24, 48) for a in ("gpt", "lstm", "gru")]
    for r in rows:
        assert r["train_tokens_per_s"] > 0 and r["gen_tokens_per_s"] > 0
        assert r["train_vs_gpt"] > 0 and r["gen_vs_gpt"] > 0
        if r["arch"] == "gpt":
            assert r["train_vs_gpt"] == 1.0 and r["gen_vs_gpt"] == 1.0
    by = {(r["seq"], r["arch"]): r for r in rows}
    # gpt keeps 2 (k, v) x layers x d_model fp32 values per cached token: seq - gen_tokens - 1 of them.
    for seq in (24, 48):
        assert by[seq, "gpt"]["state_kib"] * 1024 == 2 * 2 * 32 * 4 * (seq - 4 - 1)
    assert by[48, "gpt"]["decode_mflops"] > by[24, "gpt"]["decode_mflops"]
    for cell, tensors in (("lstm", 2), ("gru", 1)):  # (h, c) or h per layer, the same at any length
        hidden = int(by[24, cell]["size"].split()[0][1:])
        assert by[24, cell]["state_kib"] == by[48, cell]["state_kib"] == 2 * tensors * hidden * 4 / 1024
        assert by[24, cell]["decode_mflops"] == by[48, cell]["decode_mflops"]


def test_cli_prints_table_and_cost_per_token(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["rnn", "--seqs", "16,32", "--batch", "2", "--gen-tokens", "4", "--d-model", "16", "--gpt-layers", "1",
            "--vocab", "32", "--steps", "1", "--device", "cpu"]
    assert run_bench(args) == 0
    out = capsys.readouterr().out
    assert "train tok/s" in out and "gen tok/s" in out and "state/seq KiB" in out
    assert "gpt: O(T) per generated token" in out and "lstm: O(1) per generated token" in out


def test_bad_arguments() -> None:
    for bad in (["--cells", "transformer"], ["--seqs", "8", "--gen-tokens", "8"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
