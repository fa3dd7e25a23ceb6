"""`archlab report` on a real 2x2 sweep (gpt, llama x two learning rates; trained once per module, in-process):
one table row per run whose values are the ones in the W&B records, the differing overrides as columns, a CSV
that parses, PNGs that decode; and one-line errors (exit code 2) for bad arguments."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from framework.cli import main
from framework.wandb_records import read_runs

STEP = "trainer/global_step"
# Text data (a slice of the plays), so the runs log val/bpb too.
SWEEP = ["train", "-m", "model=gpt,llama", "optimizer.lr=1e-3,3e-3", "data=shakespeare", "data.max_bytes=20000",
         "data.seq_len=32", "debug=fast", "logger=wandb", "callbacks=none", "model.n_layers=1", "model.d_model=32",
         "sample.prompt=null"]
QUIET_WANDB = (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_CONSOLE", "off"))


def _main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report") / "sweep"
    with pytest.MonkeyPatch.context() as mp:
        for var, value in QUIET_WANDB:
            mp.setenv(var, value)
        assert _main([*SWEEP, f"hydra.sweep.dir={root}"]) == 0
    assert len(read_runs(root, wait_s=20)) == 4  # also waits until wandb-core has flushed every run
    return root


def _report(argv: list[str], capsys) -> tuple[int, str, str]:
    code = _main(["report", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_one_row_per_run_with_the_values_the_records_hold(sweep_dir, tmp_path, capsys):
    code, out, err = _report([str(sweep_dir), "--out", str(tmp_path)], capsys)
    assert code == 0, err
    rows = _csv(tmp_path / "report.csv")
    assert len(rows) == 4
    header = list(rows[0])
    # What the jobs differ in: the architecture (model=) and optimizer.lr; the shared overrides are no columns.
    assert "optimizer.lr" in header and "data" not in header and "model.d_model" not in header
    assert {(r["arch"], float(r["optimizer.lr"])) for r in rows} == {
        ("gpt", 1e-3), ("gpt", 3e-3), ("llama", 1e-3), ("llama", 3e-3)}
    for row in rows:
        record = read_runs(sweep_dir / row["run"])[0]  # the row names its job directory
        val = [v for _, v in record.series("val/loss", step_key=STEP)]
        assert len(val) == 2  # two validations: best and final may differ
        assert float(row["final val/loss"]) == val[-1] == record.summary["val/loss"]
        assert float(row["best val/loss"]) == min(val)
        assert int(row["params"]) == record.summary["model/params"] > 0
        assert float(row["tokens/s"]) > 0 and row["status"] == "finished" and int(row["steps"]) == 6
        bpb = [v for _, v in record.series("val/bpb", step_key=STEP)]
        assert float(row["final val/bpb"]) == bpb[-1] and float(row["best val/bpb"]) == min(bpb)
    # The printed table is the Markdown one in report.md: a header, a rule and one line per run.
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4 and table[0].startswith("| run | arch | optimizer.lr |")
    assert "\n".join(table) in (tmp_path / "report.md").read_text()


def test_plots_exist_decode_and_are_linked_from_the_markdown(sweep_dir, tmp_path, capsys):
    from matplotlib import image

    code, _, err = _report([str(sweep_dir), "--out", str(tmp_path), "--metric", "train/loss"], capsys)
    assert code == 0, err
    md = (tmp_path / "report.md").read_text()
    for name in ("val_loss_vs_step", "val_loss_vs_time", "val_loss_vs_params", "metric_train_loss"):
        path = tmp_path / f"{name}.png"
        assert path.stat().st_size > 0
        pixels = image.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.std() > 0  # something is drawn, not a blank canvas
        assert f"({name}.png)" in md
    rows = _csv(tmp_path / "report.csv")
    assert all(float(r["train/loss"]) > 0 for r in rows)  # --metric adds a column of final values


def test_several_dirs_and_the_default_output_directory(sweep_dir, capsys):
    first, other = sweep_dir / "0", sweep_dir / "2"  # gpt and llama, both at lr 1e-3
    code, _, err = _report([str(first), str(other)], capsys)
    assert code == 0, err
    rows = _csv(first / "report.csv")  # written next to the first DIR
    assert [r["arch"] for r in rows] == ["gpt", "llama"]
    assert "optimizer.lr" not in rows[0]  # the same in both runs: not a column
    assert (first / "val_loss_vs_step.png").stat().st_size > 0


@pytest.mark.parametrize("case", ["missing", "empty", "metric"])
def test_bad_arguments_fail_with_one_line_and_exit_code_2(sweep_dir, tmp_path, capsys, case):
    (tmp_path / "empty").mkdir()
    argv = {"missing": [str(tmp_path / "nope")], "empty": [str(tmp_path / "empty")],
            "metric": [str(sweep_dir), "--metric", "val/los"]}[case]
    code, out, err = _report([*argv, "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("archlab report: error: "), err
    expected = {"missing": f"{tmp_path / 'nope'}: no such directory",
                "empty": f"{tmp_path / 'empty'}: no W&B runs under it",
                "metric": "--metric val/los: no run logged it"}[case]
    assert expected in err
    if case == "metric":
        assert "val/loss" in err  # names the keys that do exist, nearest first
    assert not (tmp_path / "out" / "report.md").exists() and "|" not in out
