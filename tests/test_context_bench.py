"""``archlab bench context`` at toy sizes, and the peak-tensor-memory counter it measures with: counts that match
known allocations, slopes that recover a known exponent, the materialised scores of the math path showing in its
memory, the skip rules, and the files it writes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from framework.bench import benchmarks
from framework.bench.tensor_memory import PeakTensorMemory
from plugins.decoder.bench.context import (DENSE, MIXERS, Cell, ContextConfig, Result, load, loglog_slope, main,
                                           report, run, score_matrix_bytes, summary_rows, write)

MIB = 2**20
TINY = dict(d_model=32, n_heads=2, window=16, block=8, rounds=1, fit_from=64)


def test_peak_tensor_memory_counts_new_storages_while_they_live():
    before = torch.ones(MIB // 4)  # existed before: not counted
    with PeakTensorMemory() as memory:
        a = torch.ones(MIB // 4)   # 1 MiB
        b = a * 2                  # 2 MiB held
        del b                      # freed: 1 MiB
        c = a + before             # 2 MiB again
        a.add_(1)                  # in place: nothing new
        view = c[: MIB // 8]       # a view: nothing new
    assert memory.peak_bytes == 2 * MIB and memory.current_bytes == 2 * MIB
    del view


def test_peak_tensor_memory_sees_the_backward_pass():
    x = torch.randn(256, 256, requires_grad=True)  # 256 KiB
    with PeakTensorMemory() as memory:
        (x @ x).relu().sum().backward()
    # Forward keeps x @ x and its relu (256 KiB each); backward adds gradients of the same size, ending with x.grad.
    assert 3 * 256 * 1024 <= memory.peak_bytes <= 6 * 256 * 1024
    assert memory.current_bytes == x.grad.untyped_storage().nbytes()


def test_loglog_slope_recovers_the_exponent():
    for k in (1.0, 2.0, 0.5):
        assert loglog_slope([(t, 3.0 * t**k) for t in (1024, 2048, 4096, 8192)]) == pytest.approx(k)
    assert loglog_slope([(1024, 1.0)]) is None and loglog_slope([]) is None


def test_every_mixer_is_timed_and_measured_and_the_math_path_holds_its_scores():
    cfg = ContextConfig(mixers=("attention", "attention_math", "sliding_window", "lsh", "mamba", "lstm"),
                        lengths=(64, 128), **TINY)
    res = run(cfg)
    for mixer, by_len in res.cells.items():
        for t, cell in by_len.items():
            assert len(cell.seconds) == 1 and cell.seconds[0] > 0 and cell.peak_bytes > 0, (mixer, t)
    assert res.params["attention"] == res.params["attention_math"]
    # Unfused attention materialises the fp32 (B, H, T, T) scores and keeps its softmax for backward; SDPA's fused
    # CPU kernel keeps only an O(T) log-sum-exp. (At 512 tokens the scores outweigh the logits.)
    big = ContextConfig(mixers=("attention", "attention_math"), lengths=(512,), **TINY)
    cells = run(big).cells
    assert cells["attention_math"][512].peak_bytes - cells["attention"][512].peak_bytes >= score_matrix_bytes(big, 512)
    text = report(res)
    assert all(m in text for m in cfg.mixers) and "time slope" in text and "memory crossover" in text


def test_the_skip_rules_stop_a_mixer_and_say_why():
    scores_128 = 4 * 2 * 128 * 128 / 2**30  # GiB of one score matrix at 128 tokens, 2 heads
    cfg = ContextConfig(mixers=("attention", "attention_math"), lengths=(64, 128, 256), memory=False,
                        math_max_gib=scores_128, **TINY)
    res = run(cfg)
    assert all(res.cells[m][t].seconds for m in cfg.mixers for t in (64, 128)) and res.cells["attention"][256].seconds
    assert "score matrix" in res.cells["attention_math"][256].skipped and not res.cells["attention_math"][256].seconds
    # --max-step-s: a step predicted (from the shorter lengths) over the budget stops the mixer there.
    stopped = run(ContextConfig(mixers=("attention",), lengths=(64, 128), memory=False, max_step_s=1e-9, **TINY))
    assert stopped.cells["attention"][64].seconds and "--max-step-s" in stopped.cells["attention"][128].skipped
    assert "not run" in report(stopped) and "attention from 128" in report(stopped)


def _synthetic() -> Result:
    """Dense quadratic, a window mixer linear, 1.5x dearer at 1k and so level at 1536 and 8/3x cheaper at 4k."""
    cfg = ContextConfig(mixers=(DENSE, "sliding_window"), lengths=(1024, 2048, 4096, 8192), fit_from=1024,
                        rounds=3)
    dense = {t: Cell([1e-3 * (t / 1024) ** 2] * 3, peak_bytes=int(MIB * t / 1024)) for t in cfg.lengths}
    window = {t: Cell([1.5e-3 * (t / 1024)] * 3, peak_bytes=int(2 * MIB * t / 1024)) for t in cfg.lengths}
    return Result(cfg, {DENSE: dense, "sliding_window": window}, {DENSE: 10, "sliding_window": 10}, "cpu")


def test_summary_reads_slopes_speed_ups_and_crossovers_off_the_cells():
    rows = {r["mixer"]: r for r in summary_rows(_synthetic())}
    assert rows[DENSE]["time_slope"] == pytest.approx(2.0) and rows[DENSE]["memory_slope"] == pytest.approx(1.0)
    window = rows["sliding_window"]
    assert window["time_slope"] == pytest.approx(1.0)
    assert window["speedup_4k"] == pytest.approx(8 / 3) and window["memory_4k"] == pytest.approx(2.0)
    assert window["time_crossover"] == "~1536" and window["memory_crossover"] == "> 8192"
    assert "LRA @4k: Local Attention 5.3x dense (TPU v3); ours sliding_window 2.67x" in report(_synthetic())


def test_write_gives_the_table_the_raw_rounds_and_a_plot(tmp_path):
    paths = write(_synthetic(), tmp_path)
    assert [p.name for p in paths] == ["bench_context.txt", "bench_context.json", "cost_of_context.png"]
    data = json.loads(paths[1].read_text())
    assert data["cells"]["sliding_window"]["4096"]["seconds"] == [pytest.approx(0.006)] * 3
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_saved_result_renders_the_same_table_again(tmp_path, capsys):
    first = write(_synthetic(), tmp_path / "first")
    assert report(load(first[1])) == report(_synthetic())
    assert main(["--from", str(first[1]), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again/bench_context.txt").read_text() == first[0].read_text()
    assert (tmp_path / "again/bench_context.json").read_text() == first[1].read_text()


def test_the_studys_table_regenerates_byte_for_byte_from_its_saved_rounds(tmp_path, capsys):
    study = Path(__file__).resolve().parents[1] / "experiments/cost_of_context"
    assert main(["--from", str(study / "bench_context.json"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "bench_context.txt").read_text() == (study / "bench_context.txt").read_text()
    assert set(load(study / "bench_context.json").cfg.mixers) == set(MIXERS)


@pytest.mark.parametrize("argv, message", [
    (["--mixers", "attention,transformer"], "mixers: 'transformer' is not one of attention"),
    (["--lengths", "1k,lots"], "lengths: 'lots' is not a number of tokens"),
    (["--lengths", "256", "--window", "256"], "lengths: give one or more lengths >= 2 x window (512)"),
    (["--window", "100", "--block", "64"], "block (64) must divide window (100)"),
    (["--math-max-gib", "0"], "math-max-gib must be > 0"),
    (["--from", "no/such/bench_context.json"], "from: no/such/bench_context.json is not a file"),
])
def test_bad_arguments_fail_early_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_registered_and_the_cli_prints_the_table(capsys):
    assert "context" in benchmarks()
    assert main(["--mixers", "attention,gated_deltanet", "--lengths", "64", "--d-model", "32", "--heads", "2",
                 "--window", "16", "--block", "8", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "gated_deltanet" in out and "MiB @64" in out
