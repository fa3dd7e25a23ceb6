"""``archlab bench sparse`` at toy sizes: one row per (length, pattern), ratios against dense SDPA,
a crossover column, and the peak-memory subprocess."""
from __future__ import annotations

import pytest

from framework.bench import benchmarks
from framework.bench.common import crossover_length
from plugins.decoder.bench.sparse import PATTERNS, main, peak_memory, run


def test_run_gives_ratios_against_dense_for_every_pattern() -> None:
    rows = run(lengths=(96, 160), window=16, block=16, rounds=1)
    assert [(r["t"], r["pattern"]) for r in rows] == [(t, p) for t in (96, 160) for p in PATTERNS]
    for row in rows:
        assert row["speedup"] > 0 and row["dense_s"] > 0 and row["sparse_s"] > 0
        assert row["crossover"]


def test_crossover_interpolates_between_lengths() -> None:
    assert crossover_length([(1024, 0.5), (4096, 2.0)]) == "~2048"
    assert crossover_length([(1024, 1.5), (4096, 3.0)]) == "<= 1024"
    assert crossover_length([(1024, 0.2), (4096, 0.5)]) == "> 4096"


def test_peak_memory_subprocess_reports_bytes() -> None:
    assert peak_memory("sliding_window", 512, 2, 16, 32, 32) > 0


def test_cli_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert "sparse" in benchmarks()
    assert main(["--lengths", "64", "--patterns", "sliding_window", "lsh", "--window", "8", "--block", "8",
                 "--rounds", "1", "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert "speed-up" in out and "crossover" in out and "sliding_window" in out


def test_kernels_get_a_row_each_and_lsh_its_own() -> None:
    rows = run(lengths=(96,), patterns=("sliding_window", "lsh"), window=16, block=16, rounds=1,
               kernels=("auto", "math"))
    assert [(r["pattern"], r["kernel"]) for r in rows] == [("sliding_window", "auto"), ("sliding_window", "math"),
                                                           ("lsh", "auto")]
    assert all(r["speedup"] > 0 and r["crossover"] for r in rows)


def test_flex_is_refused_on_cpu_with_the_allowed_kernels(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--lengths", "64", "--kernels", "auto,flex", "--no-memory"])
    assert "--kernels: flex not allowed here; allowed: auto, flash_cpu, math" in capsys.readouterr().err
