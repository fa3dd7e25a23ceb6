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


def test_baseline_columns_count_the_steps_to_its_mean_final_loss(sweep_dir, tmp_path, capsys):
    code, out, err = _report([str(sweep_dir), "--out", str(tmp_path), "--baseline", "model=gpt"], capsys)
    assert code == 0, err
    rows = _csv(tmp_path / "report.csv")
    gpt = [r for r in rows if r["arch"] == "gpt"]
    target = sum(float(r["final val/loss"]) for r in gpt) / len(gpt)
    reached = "steps to model=gpt final val/loss"
    for row in rows:
        val = read_runs(sweep_dir / row["run"])[0].series("val/loss", step_key=STEP)
        # Validations are logged under the 0-based index of their last training step.
        first = next((step + 1 for step, loss in val if loss <= target), None)
        assert row[reached] == ("" if first is None else str(first)), row
        if first is not None:
            assert float(row["x fewer steps than model=gpt"]) == pytest.approx(6 / first)
    assert any(r[reached] for r in gpt)  # the better gpt run reaches the mean of the two
    assert f"final {target:.4g} val/loss (mean of its runs) after 6 steps" in out


def test_mean_over_merges_the_runs_of_one_configuration(sweep_dir, tmp_path, capsys):
    code, out, err = _report([str(sweep_dir), "--out", str(tmp_path), "--mean-over", "optimizer.lr"], capsys)
    assert code == 0, err
    rows = _csv(tmp_path / "report.csv")
    merged = [line for line in out.split("Mean (min-max) over optimizer.lr:")[1].splitlines() if line.startswith("|")]
    assert merged[0].startswith("| runs | arch | status | steps | params |") and len(merged) == 2 + 2
    for line in merged[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        arch = cells[1]
        finals = sorted(float(r["final val/loss"]) for r in rows if r["arch"] == arch)
        column = merged[0].strip("|").split("|").index(" final val/loss ")
        assert cells[0] == "2"
        assert cells[column] == f"{sum(finals) / 2:.4g} ({finals[0]:.4g}-{finals[1]:.4g})"


def test_archive_regenerates_the_table_byte_for_byte_and_overwrites_nothing(sweep_dir, tmp_path, capsys):
    study = tmp_path / "study"
    flags = ["--baseline", "model=gpt", "--mean-over", "optimizer.lr", "--colour-by", "optimizer.lr"]
    assert _report([str(sweep_dir), "--out", str(study), *flags, "--archive"], capsys)[0] == 0
    table = (study / "report.md").read_text()
    logs = sorted((study / "runs").rglob("run-*.wandb.gz"))
    assert len(logs) == 4 and all((study / "runs" / str(i) / ".hydra" / "overrides.yaml").is_file() for i in range(4))
    raw = {p.name: p for p in sweep_dir.rglob("run-*.wandb")}
    assert all(p.stat().st_size < raw[p.name[:-3]].stat().st_size / 2 for p in logs)
    (study / "report.md").unlink()
    # From the archive alone, with its files' times scrambled (a fresh clone's): the same table, byte for byte.
    for i, log in enumerate(reversed(logs)):
        import os
        os.utime(log, (1e9 + i, 1e9 + i))
    code, _, err = _report([str(study / "runs"), "--out", str(study), *flags, "--archive"], capsys)
    assert code == 0, err
    assert (study / "report.md").read_text() == table
    # Archiving other runs into the same place is refused before anything is written.
    before = {p: p.read_bytes() for p in study.rglob("*") if p.is_file()}
    code, _, err = _report([str(sweep_dir / "0"), str(sweep_dir / "3"), "--out", str(study), "--archive"], capsys)
    assert code == 2 and "already holds a run" in err
    assert {p: p.read_bytes() for p in study.rglob("*") if p.is_file()} == before


def test_a_new_chunk_of_runs_joins_an_archive_and_the_whole_regenerates(sweep_dir, tmp_path, capsys):
    study = tmp_path / "study"
    first = [str(sweep_dir / "0"), str(sweep_dir / "1")]
    assert _report([*first, "--out", str(study), "--archive"], capsys)[0] == 0
    assert sorted(p.name for p in (study / "runs").iterdir()) == ["0", "1", "ARCHIVE.md"]
    # A later chunk (another session's sweep) beside the archive: the archived runs keep their names, the new ones
    # are named with their sweep directory's, and everything lands in the one archive.
    later = [str(sweep_dir / "2"), str(sweep_dir / "3")]
    code, out, err = _report([str(study / "runs"), *later, "--out", str(study), "--archive"], capsys)
    assert code == 0, err
    assert [r["run"] for r in _csv(study / "report.csv")] == ["0", "1", "sweep/2", "sweep/3"]
    assert all((study / "runs" / "sweep" / n / ".hydra" / "overrides.yaml").is_file() for n in ("2", "3"))
    table = (study / "report.md").read_text()
    code, _, err = _report([str(study / "runs"), "--out", str(tmp_path / "again")], capsys)
    assert code == 0, err
    assert (tmp_path / "again" / "report.md").read_text() == table


@pytest.mark.parametrize("by", ["val/loss", "val/acc"])
def test_best_over_keeps_each_configurations_best_run_by_the_metric(sweep_dir, tmp_path, capsys, by):
    code, out, err = _report([str(sweep_dir), "--out", str(tmp_path), "--best-over", "optimizer.lr",
                              "--best-by", by], capsys)
    assert code == 0, err
    rows = _csv(tmp_path / "report.csv")
    column = "final val/loss" if by == "val/loss" else by  # --best-by adds its key as a column
    pick = min if by == "val/loss" else max
    table = out.split("Best over optimizer.lr (")[1]
    assert table.startswith(("lowest" if by == "val/loss" else "highest") + f" final {by}")
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:3] == ["runs", "run", "arch"] and len(lines) == 2 + 2  # one row per architecture
    for line in lines[2:]:
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        arch_rows = [r for r in rows if r["arch"] == cells["arch"]]
        winner = pick(arch_rows, key=lambda r: float(r[column]))
        assert cells["runs"] == "2" and cells["run"] == winner["run"], (cells, arch_rows)
        assert cells["optimizer.lr"] == winner["optimizer.lr"]


def test_plot_against_draws_the_best_run_per_point_with_reference_points(sweep_dir, tmp_path, capsys):
    from framework.report import collect_runs
    from framework.report.plots import Against, against_points

    reference = tmp_path / "published.csv"
    reference.write_text("source,group,panel,x,y\npaper,gpt,,0.001,3.0\npaper,RWKV,llama,0.003,2.5\n")
    code, out, err = _report([str(sweep_dir), "--out", str(tmp_path), "--plot-against", "optimizer.lr",
                              "--panel-by", "model", "--reference", str(reference)], capsys)
    assert code == 0, err
    image = tmp_path / "val_loss_vs_optimizer.lr.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.name in (tmp_path / "report.md").read_text()
    # The points drawn: per (panel, colour group), x = the run's learning rate, y = its final val/loss.
    runs = collect_runs([sweep_dir])
    points = against_points(runs, Against("optimizer.lr", panel_by="model"), lambda r: r.architecture)
    assert points == {(arch, arch): {float(r.value("optimizer.lr")): r.final("val/loss")
                                     for r in runs if r.architecture == arch} for arch in ("gpt", "llama")}
    # Two runs at one x: the better one is the point (accuracy: the higher; loss: the lower).
    by_arch = against_points(runs, Against("optimizer.lr", metric="val/acc"), lambda r: "all")
    for lr in (1e-3, 3e-3):
        assert by_arch[("", "all")][lr] == max(r.final("val/acc") for r in runs if float(r.value("optimizer.lr")) == lr)


def test_colours_stay_distinct_past_ten_groups():
    """A study's eleven mixers: matplotlib's default cycle repeats after ten, so the eleventh would share a colour."""
    from framework.report.plots import colours_for

    for groups in (2, 11, 20):
        colours = colours_for([f"group{i % groups}" for i in range(3 * groups)])
        assert list(colours) == [f"group{i}" for i in range(groups)] and len(set(colours.values())) == groups


@pytest.mark.parametrize("case", ["missing", "empty", "metric", "baseline_form", "baseline_value", "mean_over",
                                  "colour_by", "best_over", "best_by", "against_text", "panel_alone", "panel_value",
                                  "reference_columns", "reference_number"])
def test_bad_arguments_fail_with_one_line_and_exit_code_2(sweep_dir, tmp_path, capsys, case):
    (tmp_path / "empty").mkdir()
    bad_columns, bad_number = tmp_path / "columns.csv", tmp_path / "number.csv"
    bad_columns.write_text("source,group,x,y\npaper,gpt,64,1.0\n")
    bad_number.write_text("source,group,panel,x,y\npaper,gpt,,64,high\n")
    argv = {"missing": [str(tmp_path / "nope")], "empty": [str(tmp_path / "empty")],
            "metric": [str(sweep_dir), "--metric", "val/los"],
            "baseline_form": [str(sweep_dir), "--baseline", "gpt"],
            "baseline_value": [str(sweep_dir), "--baseline", "model=bert"],
            "mean_over": [str(sweep_dir), "--mean-over", "data"],
            "colour_by": [str(sweep_dir), "--colour-by", "seed"],
            "best_over": [str(sweep_dir), "--best-over", "seed"],
            "best_by": [str(sweep_dir), "--best-over", "optimizer.lr", "--best-by", "val/accuracy"],
            "against_text": [str(sweep_dir), "--plot-against", "model"],
            "panel_alone": [str(sweep_dir), "--panel-by", "model"],
            "panel_value": [str(sweep_dir), "--plot-against", "optimizer.lr", "--panel-by", "data.task"],
            "reference_columns": [str(sweep_dir), "--plot-against", "optimizer.lr", "--reference", str(bad_columns)],
            "reference_number": [str(sweep_dir), "--plot-against", "optimizer.lr", "--reference", str(bad_number)]}[case]
    code, out, err = _report([*argv, "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("archlab report: error: "), err
    expected = {"missing": f"{tmp_path / 'nope'}: no such directory",
                "empty": f"{tmp_path / 'empty'}: no W&B runs under it",
                "metric": "--metric val/los: no run logged it",
                "baseline_form": "--baseline 'gpt': expected KEY=VALUE",
                "baseline_value": "--baseline model=bert: no run has model=bert; its values here: gpt, llama",
                "mean_over": "--mean-over data: the runs do not differ in it; they differ in",
                "colour_by": "--colour-by seed: the runs do not differ in it",
                "best_over": "--best-over seed: the runs do not differ in it",
                "best_by": "--best-by val/accuracy: no run logged it",
                "against_text": "--plot-against model: run 0 has model='gpt', not a number",
                "panel_alone": "--panel-by model: needs --plot-against KEY",
                "panel_value": "--panel-by data.task: runs 0, 1, 2, 3 have no value for it",
                "reference_columns": f"--reference {bad_columns}: missing column(s) panel; expected the header "
                                     "source,group,panel,x,y",
                "reference_number": f"--reference {bad_number}: line 2: y='high' is not a number"}[case]
    assert expected in err
    if case == "metric":
        assert "val/loss" in err  # names the keys that do exist, nearest first
    assert not (tmp_path / "out" / "report.md").exists() and "|" not in out
