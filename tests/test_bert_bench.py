"""Smoke tests of ``archlab bench encoders`` at a tiny size, and of every benchmark case's wiring."""
from __future__ import annotations

import re

import pytest
import torch

from framework.bench import run_bench

pytest.importorskip("transformers")

from plugins.bert.bench import CASES, BenchConfig, Size, main, parse_args, run  # noqa: E402

TINY = ["--sizes", "32x2x4", "--batch", "2", "--seq", "16", "--vocab", "64", "--steps", "1", "--warmup", "1",
        "--device", "cpu"]


def tiny_config(**overrides) -> BenchConfig:
    base = dict(sizes=[Size(32, 2, 4)], batch=2, seq=16, vocab=64, steps=2, warmup=1, device="cpu")
    return BenchConfig(**(base | overrides))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_builds_equal_sizes_and_aligned_logits(case) -> None:
    """Every row of the benchmark compares like with like: same parameter count, logits aligned with labels."""
    cfg = tiny_config()
    batch = case.make_batch(cfg, torch.Generator().manual_seed(0))
    scored = batch["labels"] != -100
    assert scored.any() and (batch["labels"][scored] < cfg.vocab).all()
    ours, hf = case.build_ours(Size(32, 2, 4), cfg), case.build_hf(Size(32, 2, 4), cfg)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in hf.parameters())
    losses = []
    for model, logits_of in ((ours, case.ours_logits), (hf, case.hf_logits)):
        logits, labels = logits_of(model, batch)
        assert logits.shape == (*labels.shape, cfg.vocab)
        assert (labels != -100).sum() == scored.sum()  # every scored position, whatever the layout
        losses.append(torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab), labels.reshape(-1)))
    assert all(torch.isfinite(loss) for loss in losses)


def test_run_returns_one_matched_row_per_model_and_dtype() -> None:
    rows = run(tiny_config(models=("bert",)))
    assert [(r["model"], r["dtype"]) for r in rows] == [
        ("bert (ours)", "fp32"), ("HF BertForMaskedLM (sdpa)", "fp32"),
        ("bert (ours)", "bf16"), ("HF BertForMaskedLM (sdpa)", "bf16"),
    ]
    for r in rows:
        assert r["size"] == "d32 L2 H4" and r["params_match"], r
        assert r["tokens_per_s"] > 0 and r["ratio_vs_hf"] > 0
        if r["impl"] == "hf":
            assert r["ratio_vs_hf"] == 1.0 and r["verdict"] == "baseline"
        else:
            assert r["verdict"].startswith(("meets target", "parity within noise", "BELOW target"))
            assert re.fullmatch(r"\d+\.\d\d-\d+\.\d\d", r["ratio_iqr"])
    # BERT at d=32, L=2, vocab 64, 16 positions, 2 token types, d_ff 128: embeddings + LN, blocks, MLM head.
    d, ff = 32, 128
    block = 4 * (d * d + d) + (d * ff + ff) + (ff * d + d) + 2 * 2 * d
    expected = (64 + 16 + 2) * d + 2 * d + 2 * block + (d * d + d) + 2 * d + 64
    assert rows[0]["params"] == expected


def test_cli_prints_table_and_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_bench(["encoders", *TINY, "--dtype", "fp32"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("size"))
    for column in ("model", "dtype", "params", "tokens/s", "vs HF", "IQR", "tok/s ratio", "verdict"):
        assert column in header
    assert re.search(r"d32 L2 H4\s+bert \(ours\)\s+fp32\s", out)
    assert re.search(r"d32 L2 H4\s+HF BertForMaskedLM \(sdpa\)\s+fp32\s.*baseline", out)
    assert out.strip().splitlines()[-1].startswith("verdict: ")


def test_arguments_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = parse_args(["--sizes", "256x4x8, 512x8x8", "--dtype", "bf16", "--models", "bert"])
    assert cfg.sizes == [Size(256, 4, 8), Size(512, 8, 8)] and cfg.dtypes == ("bf16",) and cfg.models == ("bert",)
    assert parse_args([]).models == tuple(c.name for c in CASES)
    for bad, message in ((["--sizes", "30x2x4"], "divisible"), (["--models", "gpt"], "models"),
                         (["--sizes", "3x2"], "DxLxH")):
        with pytest.raises(SystemExit):
            main([*TINY, *bad])
        assert message in capsys.readouterr().err
