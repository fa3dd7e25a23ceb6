"""``write_report``: the table (Markdown + CSV) and the plots of a set of runs, written into one directory."""
from __future__ import annotations

import difflib
from pathlib import Path

from . import table
from .plots import write_plots
from .runs import ReportError, Run

MD_NAME, CSV_NAME = "report.md", "report.csv"
_SHOWN_KEYS = 8  # keys named when a --metric is unknown: enough to spot a typo, short enough to read


def check_metrics(runs: list[Run], metrics: list[str]) -> None:
    """Every ``--metric`` must be a numeric key some run logged; else a ReportError naming nearby keys."""
    logged = sorted(set().union(*(run.numeric_keys() for run in runs)))
    for key in metrics:
        if key in logged:
            continue
        near = difflib.get_close_matches(key, logged, n=_SHOWN_KEYS, cutoff=0.5)
        shown = near or logged[:_SHOWN_KEYS]
        more = f" (+{len(logged) - len(shown)} more)" if len(logged) > len(shown) else ""
        raise ReportError(f"--metric {key}: no run logged it; logged keys include {', '.join(shown)}{more}")


def write_report(runs: list[Run], out: Path, metrics: list[str]) -> tuple[str, list[Path]]:
    """Write report.md, report.csv and the PNGs into ``out``; returns (the Markdown table, the files written)."""
    check_metrics(runs, metrics)
    out.mkdir(parents=True, exist_ok=True)
    header, body = table.rows(runs, metrics)
    text = table.markdown(header, body)
    table.write_csv(out / CSV_NAME, header, body)
    images = write_plots(runs, out, metrics)
    lines = [f"# Report: {len(runs)} run{'s' * (len(runs) != 1)}", "",
             "Written by `archlab report` (columns and plots: docs/report.md).", "", text, ""]
    lines += [f"![{p.stem}]({p.name})" for p in images]
    (out / MD_NAME).write_text("\n".join(lines) + "\n")
    return text, [out / MD_NAME, out / CSV_NAME, *images]
