"""``archlab bench mixers`` at the smoke size: one table with a column per training length, generation length and
state size, a row per model and dtype; recurrent decode state flat in the generated length while attention's KV
cache grows; the issue's targets as verdict lines; bad flags are argparse errors (exit 2) naming the flag."""
from __future__ import annotations

import contextlib
import io

import pytest
import torch

from framework.bench import benchmarks, load_benchmark
from plugins.decoder.bench import mixers
from plugins.decoder.bench.mixers import parse_args, report, run, state_shape, tensor_bytes

SMOKE = ["--d-model", "64", "--layers", "2", "--batch", "2", "--seqs", "64", "--gen-lengths", "16,32", "--steps", "2",
         "--warmup", "1", "--dtype", "fp32", "--mixers", "attention,mamba,mla,gated_deltanet", "--hf", "mamba",
         "--threads", "1"]


@pytest.fixture(scope="module")
def smoke():
    cfg = parse_args(SMOKE)
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # progress lines
            res = run(cfg)
            text = report(res, cfg)
    finally:
        torch.set_num_threads(threads)
    return res, text


def test_registered_as_a_benchmark() -> None:
    assert benchmarks()["mixers"] == "plugins.decoder.bench.mixers"
    assert load_benchmark("mixers") is mixers.main


def test_smoke_prints_one_table_with_the_expected_columns_and_rows(smoke) -> None:
    res, text = smoke
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("model "))
    for col in ("dtype", "params", "train tok/s @64", "gen tok/s @16", "gen tok/s @32", "state KiB @16",
                "state KiB @32", "note"):
        assert col in header, col
    rows = {(r["model"], r["dtype"]): r for r in res.rows}
    assert set(rows) == {("attention", "fp32"), ("mamba", "fp32"), ("mla", "fp32"), ("gated_deltanet", "fp32"),
                         ("HF Mamba (slow path)", "fp32")}
    for r in rows.values():
        assert r["params"] > 0
        assert r["train_64"] > 0 and r["gen_16"] > 0 and r["gen_32"] > 0
    # HF Mamba is the same model as ours (hf_from_stack): equal parameter counts, said in the row
    assert rows["HF Mamba (slow path)", "fp32"]["params"] == rows["mamba", "fp32"]["params"]
    assert rows["HF Mamba (slow path)", "fp32"]["note"] == "same size as mamba"
    table_rows = [line.split("  ")[0].strip() for line in lines[lines.index(header) + 2:]]
    assert table_rows[:5] == ["attention", "mamba", "mla", "gated_deltanet", "HF Mamba (slow path)"]


def test_recurrent_state_is_flat_while_the_kv_cache_grows(smoke) -> None:
    res, text = smoke
    rows = {r["key"]: r for r in res.rows}
    mamba, attention, hf = rows["mamba"], rows["attention"], rows["hf_mamba"]
    assert mamba["state_16"] == mamba["state_32"] > 0
    assert hf["state_16"] == hf["state_32"] > 0
    # the KV cache holds every position: twice the tokens, twice the bytes (2 layers x k, v x 64 channels x fp32)
    assert attention["state_32"] == 2 * attention["state_16"] == 2 * 2 * 2 * 64 * 4 * 16
    assert "flat: O(1) in the generated length" in text
    assert "grows linearly: 1,024 bytes per token" in text
    assert "recurrent decode state flat in the generated length, attention's KV cache linear: MET" in text
    assert rows["gated_deltanet"]["state_16"] == rows["gated_deltanet"]["state_32"] > 0


def test_mla_caches_a_latent_a_fraction_of_mha_s_kv_cache(smoke) -> None:
    """d_model 64, 8 heads: MHA caches 2 x 64 numbers per token and layer, mla a latent of 16 plus a RoPE key of 4."""
    res, text = smoke
    rows = {r["key"]: r for r in res.rows}
    assert rows["mla"]["state_32"] == 2 * rows["mla"]["state_16"] == 2 * 2 * (16 + 4) * 4 * 16
    line = next(line for line in text.splitlines() if line.strip().startswith("mla cache bytes per token"))
    assert "MET: 160 vs 1,024 bytes per token (fp32), 0.156x" in line
    gdn = next(line for line in text.splitlines() if line.strip().startswith("gated_deltanet vs dense causal SDPA"))
    assert "@ seq 64, fp32: target >= 10x:" in gdn and "IQR" in gdn


def test_targets_have_a_verdict_line_each(smoke) -> None:
    _, text = smoke
    measured = [line for line in text.splitlines() if "target >=" in line]
    assert len(measured) == len(mixers.PAIRS)  # one dtype
    slow = next(line for line in measured if line.strip().startswith("mamba vs HF Mamba (slow path)"))
    assert "@ seq 64, fp32" in slow and ("MET" in slow or "MISSED" in slow or "WITHIN NOISE" in slow)
    assert "IQR" in slow
    gen = next(line for line in measured if "generation tokens/s @ context 32" in line)
    assert "IQR" in gen
    # references left out of the run say so instead of a number
    assert ("mamba2 vs HF Mamba-2 (torch path), training @ seq 64, fp32: target >= 1x: NOT MEASURED (HF Mamba-2 "
            "(torch path) not in this run (--hf))") in text
    # a missed target is followed by the profiler's breakdown of both sides
    for i, line in enumerate(text.splitlines()):
        if "target >=" in line and "MISSED" in line:
            assert "what holds it back" in text.splitlines()[i + 1]


def test_mambapy_missing_is_a_row_that_says_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mixers, "mambapy_available", lambda: False)
    cfg = mixers.BenchConfig(d_model=32, n_layers=1, n_heads=4, seqs=(16,), gen_lengths=(8,), mixers=(),
                             hf=("mambapy",))
    variants = mixers.build_variants(cfg)
    assert variants["hf_mambapy"].model is None
    assert "not installed" in variants["hf_mambapy"].note


@pytest.mark.parametrize("argv, flag", [
    (["--seqs", "abc"], "--seqs"),
    (["--gen-lengths", "1"], "gen-lengths"),
    (["--mixers", "attention,nope"], "mixers"),
    (["--hf", "llama"], "hf"),
    (["--dtype", "fp8"], "dtype"),
    (["--heads", "3"], "heads"),
    (["--steps", "0"], "steps"),
    (["--profile", "sometimes"], "--profile"),
])
def test_bad_flags_are_argparse_errors(argv, flag, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "archlab bench mixers: error:" in err and flag in err


def test_state_helpers() -> None:
    assert state_shape([100, 100, 100], [16, 32, 64]) == "flat"
    assert state_shape([16, 32, 64], [16, 32, 64]) == "linear"
    assert state_shape([16, 20, 64], [16, 32, 64]) == "grows"
    t = torch.zeros(2, 3)
    assert tensor_bytes([t, (t, torch.zeros(4, dtype=torch.bfloat16)), {"a": None}]) == 24 + 8


def test_decoders_of_the_same_weights_generate_the_same_tokens() -> None:
    """The generation harness drives each side correctly: ours and the Hugging Face model converted from it (same
    weights) decode the same greedy tokens from the same prompt; a second call restarts from the prefill (ours,
    RecurrentGemma) and a second decoder of the same RecurrentGemma model (bf16) does not disturb the first."""
    cfg = mixers.BenchConfig(d_model=32, n_layers=2, n_heads=4, seqs=(16,), gen_lengths=(16,), mixers=("mamba",),
                             hf=("mamba", "recurrentgemma"))
    variants = mixers.build_variants(cfg)
    prompt = torch.randint(0, cfg.vocab, (1, 12), generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")

    def tokens(key: str, dtype: str = "fp32") -> mixers.Decoder:
        return mixers.Decoder(variants[key], prompt, 6, cpu, dtype)

    ours, hf = tokens("mamba"), tokens("hf_mamba")
    assert torch.equal(torch.cat(ours.decode()), torch.cat(hf.decode()))
    pairs = [("mamba", ours)]
    if variants["hf_recurrentgemma"].model is not None:  # rglru and its converter import
        rg_ours, rg_hf = tokens(mixers.RG_TWIN), tokens("hf_recurrentgemma")
        first = torch.cat(rg_hf.decode())
        tokens("hf_recurrentgemma", "bf16").decode()
        assert torch.equal(torch.cat(rg_ours.decode()), first)
        assert torch.equal(torch.cat(rg_hf.decode()), first)
        pairs.append((mixers.RG_TWIN, rg_ours))
    for _, dec in pairs:
        assert torch.equal(torch.cat(dec.decode()), torch.cat(dec.decode()))


def test_step_budget_prediction_and_single_step_ratios() -> None:
    from framework.bench.common import Timing

    assert mixers.predicted_step([], 1024, quadratic=True) is None
    assert mixers.predicted_step([(256, 2.0)], 1024, quadratic=False) == pytest.approx(8.0)
    assert mixers.predicted_step([(256, 2.0)], 1024, quadratic=True) == pytest.approx(32.0)
    assert mixers.predicted_step([(256, 1.0), (512, 4.0)], 1024, quadratic=False) == pytest.approx(16.0)
    r = mixers.pair_ratio(Timing([10.0]), Timing([1.0, 2.0, 4.0]))
    assert r.median == pytest.approx(5.0) and r.q1 <= r.median <= r.q3
    assert mixers.pair_ratio(Timing([2.0, 4.0]), Timing([1.0, 1.0])).median == pytest.approx(3.0)


def test_a_failing_or_over_budget_variant_is_a_note_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that raises (a kernel without a bf16 path) and one over --max-step-s leave '-' and say why."""
    real = mixers.train_logits

    def flaky(v, x):  # noqa: ANN001, ANN202
        if v.key == "gru" and torch.is_autocast_enabled("cpu"):
            raise RuntimeError("no bf16 kernel")
        return real(v, x)

    monkeypatch.setattr(mixers, "train_logits", flaky)
    cfg = parse_args(["--d-model", "32", "--layers", "1", "--heads", "4", "--batch", "1", "--seqs", "16,32",
                      "--gen-lengths", "8", "--steps", "1", "--mixers", "gru", "--hf", "mamba", "--profile", "none",
                      "--max-step-s", "1e-9", "--threads", "1"])
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            res = run(cfg)
    finally:
        torch.set_num_threads(threads)
    rows = {(r["key"], r["dtype"]): r for r in res.rows}
    assert "train_16" not in rows["gru", "bf16"] and "RuntimeError: no bf16 kernel" in rows["gru", "bf16"]["note"]
    assert rows["gru", "bf16"]["gen_8"] > 0  # generation does not go through the training step
    # over budget: its first (probe) step is the only one, nothing at longer lengths
    assert rows["hf_mamba", "fp32"]["train_16"] > 0 and "train_32" not in rows["hf_mamba", "fp32"]
    assert "1 step only" in rows["hf_mamba", "fp32"]["note"]
    assert res.train[16]["hf_mamba/fp32"].seconds and len(res.train[16]["hf_mamba/fp32"].seconds) == 1
