"""`archlab bench infer` on a tiny size: ours and Hugging Face generate the same greedy tokens from the same
weights, every precision gets a row with finite rates, and the ratios are paired per round."""
from __future__ import annotations

from plugins.decoder.bench.decoder import Size
from plugins.decoder.bench.infer import InferConfig, parse_args, report, run


def test_tiny_run_matches_hf_tokens_and_reports_every_precision() -> None:
    cfg = InferConfig(sizes=[Size(64, 2, 4)], batches=(2,), precisions=("fp32", "int8pack"), prompt=5,
                      new_tokens=4, rounds=1, threads=1, device="cpu")
    rows = run(cfg)
    assert {(r["model"], r["batch"], r["precision"], r["impl"]) for r in rows} == {
        (m, b, p, i) for m in ("gpt", "llama") for b in (2,)
        for p, i in (("fp32", "archlab"), ("fp32", "HF generate"), ("int8pack", "archlab"))}
    ours = [r for r in rows if r["impl"] == "archlab"]
    assert all(r["same_tokens"] for r in ours if r["precision"] == "fp32")
    assert all(r["decode_tps"] > 0 and r["prefill_tps"] > 0 for r in rows)
    assert all(r["matmul_share"] > 0 for r in ours)
    assert all(r["peak_mb"] > 0 for r in rows)
    assert all("vs_hf" in r for r in ours if r["precision"] == "fp32")
    assert all("vs_fp32" in r for r in ours if r["precision"] == "int8pack")
    int8, fp32 = (next(r for r in ours if r["precision"] == p and r["model"] == "gpt")
                  for p in ("int8pack", "fp32"))
    assert int8["weights_mb"] < 0.45 * fp32["weights_mb"]  # int8 linears (the norms stay fp32)
    assert "targets (issue 15)" in report(rows, cfg, __import__("torch").device("cpu"))


def test_bad_precision_is_refused_naming_the_known_ones(capsys) -> None:
    import pytest

    with pytest.raises(SystemExit):
        parse_args(["--precisions", "fp8"])
    assert "fp8" in capsys.readouterr().err
