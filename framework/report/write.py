"""``write_report``: the table (Markdown + CSV) and the plots of a set of runs, written into one directory."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from . import table
from .archive import archive_runs
from . import keys as K
from .compare import Baseline, best_over, mean_over
from .plots import Against, write_plots
from .reference import read_reference
from .runs import ReportError, Run, differing_overrides

MD_NAME, CSV_NAME = "report.md", "report.csv"
_SHOWN_KEYS = 8  # keys named when a --metric is unknown: enough to spot a typo, short enough to read


@dataclass
class ReportOptions:
    """What ``archlab report`` adds to its default table and plots (docs/report.md)."""

    metrics: list[str] = field(default_factory=list)  # --metric: keys to add as columns and plot against the step
    baseline: str | None = None   # --baseline KEY=VALUE: steps each run takes to reach those runs' final val/loss
    mean_over: str | None = None  # --mean-over KEY: a second table, one row per configuration (e.g. over seeds)
    colour_by: str | None = None  # --colour-by KEY: colour the plots by this override, not the architecture
    archive: bool = False         # --archive: keep the runs' raw inputs in <out>/runs/ (report.archive)
    best_over: str | None = None  # --best-over KEY: a table of each configuration's best run over KEY (e.g. the lr)
    best_by: str = K.VAL_LOSS     # --best-by METRIC: what "best" means (final value; accuracies highest)
    plot_against: str | None = None  # --plot-against KEY: final --best-by metric against a numeric override
    panel_by: str | None = None      # --panel-by KEY: one panel of that plot per value (e.g. the sequence length)
    reference: Path | None = None    # --reference CSV: published points for that plot (report.reference)


def check_metrics(runs: list[Run], metrics: list[str], flag: str = "--metric") -> None:
    """Every ``--metric`` must be a numeric key some run logged; else a ReportError naming nearby keys."""
    logged = sorted(set().union(*(run.numeric_keys() for run in runs)))
    for key in metrics:
        if key in logged:
            continue
        near = difflib.get_close_matches(key, logged, n=_SHOWN_KEYS, cutoff=0.5)
        shown = near or logged[:_SHOWN_KEYS]
        more = f" (+{len(logged) - len(shown)} more)" if len(logged) > len(shown) else ""
        raise ReportError(f"{flag} {key}: no run logged it; logged keys include {', '.join(shown)}{more}")


def _check_key(runs: list[Run], flag: str, key: str | None) -> None:
    if key and key not in differing_overrides(runs) and key != "model":
        raise ReportError(f"{flag} {key}: the runs do not differ in it; they differ in "
                          f"{', '.join(differing_overrides(runs)) or 'nothing but the architecture'}")


def write_report(runs: list[Run], out: Path, options: ReportOptions | None = None) -> tuple[str, list[Path]]:
    """Write report.md, report.csv and the PNGs into ``out``; returns (the Markdown tables, the files written).
    Every option is checked before anything is written."""
    options = options or ReportOptions()
    check_metrics(runs, options.metrics)
    if options.best_over or options.plot_against:  # the only places "best" is judged
        check_metrics(runs, [options.best_by], "--best-by")
    metrics = list(options.metrics)
    if options.best_by != K.VAL_LOSS and options.best_by not in metrics:
        metrics.append(options.best_by)  # the key "best" is judged by is a column of every table
    for flag, key in (("--mean-over", options.mean_over), ("--colour-by", options.colour_by),
                      ("--best-over", options.best_over), ("--plot-against", options.plot_against)):
        _check_key(runs, flag, key)
    if options.panel_by:  # one panel is fine (a study's first chunk): every run needs a value, not a different one
        missing = [run.label for run in runs if not run.value(options.panel_by)]
        if missing:
            raise ReportError(f"--panel-by {options.panel_by}: runs {', '.join(missing)} have no value for it")
    for flag, value in (("--panel-by", options.panel_by), ("--reference", options.reference)):
        if value and not options.plot_against:
            raise ReportError(f"{flag} {value}: needs --plot-against KEY (it shapes that plot)")
    against = Against(options.plot_against, options.best_by, options.panel_by,
                      read_reference(options.reference) if options.reference else []) if options.plot_against else None
    if against:
        for run in runs:
            against.x(run)  # a non-numeric x value is an error before anything is written
    baseline = Baseline.of(options.baseline, runs) if options.baseline else None
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = [archive_runs(runs, out)] if options.archive else []
    header, body = table.rows(runs, metrics, baseline.columns() if baseline else [])
    text = table.markdown(header, body)
    if baseline:
        text += (f"\n\nBaseline {baseline.key}={baseline.value}: final {table.cell(baseline.target)} val/loss "
                 f"(mean of its runs) after {table.cell(baseline.steps)} steps.")
    if options.mean_over:
        text += f"\n\nMean (min-max) over {options.mean_over}:\n\n" + table.markdown(
            *mean_over(options.mean_over, header, body))
    if options.best_over:
        order = "highest" if K.higher_is_better(options.best_by) else "lowest"
        best = best_over(options.best_over, options.best_by, runs)
        text += (f"\n\nBest over {options.best_over} ({order} final {options.best_by}; `runs`: how many were "
                 f"compared):\n\n" + table.markdown(["runs", *header], [[n, *body[i]] for i, n in best]))
    table.write_csv(out / CSV_NAME, header, body)
    images = write_plots(runs, out, metrics, options.colour_by, against)
    lines = [f"# Report: {len(runs)} run{'s' * (len(runs) != 1)}", "",
             "Written by `archlab report` (columns and plots: docs/report.md).", "", text, ""]
    lines += [f"![{p.stem}]({p.name})" for p in images]
    (out / MD_NAME).write_text("\n".join(lines) + "\n")
    return text, [out / MD_NAME, out / CSV_NAME, *images, *written]
