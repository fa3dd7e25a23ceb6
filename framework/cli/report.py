"""``archlab report DIR... [--out DIR] [--metric KEY ...] [--baseline KEY=VALUE] [--mean-over KEY] [--colour-by KEY]
[--archive] [--best-over KEY] [--best-by METRIC] [--plot-against KEY] [--panel-by KEY] [--reference CSV]``:
a table (Markdown + CSV) and plots of the offline W&B runs under run or sweep directories (docs/report.md)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..report import ReportError, ReportOptions, collect_runs, write_report


def _parser() -> argparse.ArgumentParser:
    what = " ".join(__doc__.split("``:", 1)[-1].split())  # the docstring after the usage line
    parser = argparse.ArgumentParser(prog="archlab report", description=what)
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="a run directory, a sweep directory, or several")
    parser.add_argument("--out", type=Path, help="where report.md, report.csv and the PNGs go (default: the first DIR)")
    parser.add_argument("--metric", action="append", default=[], metavar="KEY", nargs="+",
                        help="a logged key to plot per run and add as a column (repeatable)")
    parser.add_argument("--baseline", metavar="KEY=VALUE",
                        help="add the steps each run takes to reach the final val/loss of the runs with KEY=VALUE")
    parser.add_argument("--mean-over", metavar="KEY",
                        help="add a table with one row per configuration: mean (min-max) over KEY, e.g. seed")
    parser.add_argument("--colour-by", metavar="KEY", help="colour the plots by this override (default: the model)")
    parser.add_argument("--archive", action="store_true",
                        help="keep the runs' W&B logs (gzipped) and Hydra files in OUT/runs/: the report's inputs")
    parser.add_argument("--best-over", metavar="KEY",
                        help="add a table of each configuration's best run over KEY, e.g. optimizer.lr")
    parser.add_argument("--best-by", metavar="METRIC", default="val/loss",
                        help="the final value that makes a run best (accuracies: highest; default val/loss: lowest)")
    parser.add_argument("--plot-against", metavar="KEY",
                        help="plot the final --best-by metric against this numeric override, e.g. model.d_model")
    parser.add_argument("--panel-by", metavar="KEY", help="one panel of the --plot-against plot per value of KEY")
    parser.add_argument("--reference", type=Path, metavar="CSV",
                        help="published points for the --plot-against plot: columns source,group,panel,x,y")
    return parser


def run_report(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed the usage and the problem
        return int(exit_.code or 0)
    metrics = list(dict.fromkeys(key for group in args.metric for key in group))
    try:
        runs = collect_runs(args.dirs)
        options = ReportOptions(metrics, args.baseline, args.mean_over, args.colour_by, args.archive,
                                args.best_over, args.best_by, args.plot_against, args.panel_by, args.reference)
        text, files = write_report(runs, args.out or Path(args.dirs[0]), options)
    except ReportError as err:
        print(f"archlab report: error: {err}", file=sys.stderr)
        return 2
    print(text)
    print(f"\narchlab report: {len(runs)} runs; wrote {', '.join(f.name for f in files)} to {files[0].parent}")
    return 0
