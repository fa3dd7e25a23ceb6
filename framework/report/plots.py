"""The report's PNG plots: val/loss per run against steps and wall-clock, final val/loss against parameter count,
and one plot per ``--metric``. Runs of one architecture (or of one value of ``--colour-by``) share a colour; line
styles tell them apart."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from . import keys as K
from .runs import Run

_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def write_plots(runs: list[Run], out: Path, metrics: list[str], colour_by: str | None = None) -> list[Path]:
    """Draw every plot into ``out``; returns the files written (a plot with nothing to draw is left out).
    ``colour_by``: an override key whose value colours the runs (default: the architecture)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit to import
    group = (lambda r: r.value(colour_by)) if colour_by else (lambda r: r.architecture)
    what = colour_by or "architecture"
    written = [
        _curves(runs, K.VAL_LOSS, out / "val_loss_vs_step.png", lambda r: r.series(K.VAL_LOSS), "step", group, what),
        _curves(runs, K.VAL_LOSS, out / "val_loss_vs_time.png", lambda r: r.timed_series(K.VAL_LOSS),
                "wall-clock (s since the run started)", group, what),
        _vs_params(runs, K.VAL_LOSS, out / "val_loss_vs_params.png", group),
    ]
    if any(K.VAL_BPB in run.numeric_keys() for run in runs):
        written.append(_vs_params(runs, K.VAL_BPB, out / "val_bpb_vs_params.png", group))
    for key in metrics:
        written.append(_curves(runs, key, out / f"metric_{slug(key)}.png", lambda r, key=key: r.series(key), "step",
                               group, what))
    return [p for p in written if p is not None]


def slug(key: str) -> str:
    """A log key as a file name part: ``moe/load_cv/mean`` -> ``moe_load_cv_mean``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")


Group = Callable[[Run], str]  # what colours a run: its architecture, or its value of --colour-by


def _colours(runs: list[Run], group: Group) -> dict[str, str]:
    names = list(dict.fromkeys(group(run) for run in runs))
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def _curves(runs: list[Run], key: str, path: Path, points: Callable[[Run], list[tuple[float, float]]],
            xlabel: str, group: Group, what: str) -> Path | None:
    import matplotlib.pyplot as plt

    colours, per_arch = _colours(runs, group), {}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = 0
    for run in runs:
        xy = points(run)
        if not xy:
            continue
        name = group(run)
        n = per_arch.setdefault(name, 0)
        per_arch[name] += 1
        ax.plot(*zip(*xy), color=colours[name], linestyle=_STYLES[n % len(_STYLES)],
                marker=_MARKERS[n % len(_MARKERS)], markersize=3, linewidth=1.2, label=f"{name}: {run.label}")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel=xlabel, ylabel=key, title=f"{key} per run (colour: {what})")
    return _save(fig, ax, path)


def _vs_params(runs: list[Run], key: str, path: Path, group: Group) -> Path | None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter, NullFormatter

    colours = _colours(runs, group)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    labelled: set[str] = set()
    for run in runs:
        value, params = run.final(key), run.params
        if value is None or not params:
            continue
        arch = group(run)
        ax.scatter([params], [value], color=colours[arch], label=None if arch in labelled else arch, zorder=3)
        ax.annotate(run.label, (params, value), fontsize=7, xytext=(4, 3), textcoords="offset points")
        labelled.add(arch)
    if not labelled:
        plt.close(fig)
        return None
    counts = [run.params for run in runs if run.params]
    if max(counts) > 10 * min(counts):  # a log axis only when sizes span a decade: narrower, its labels collide
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(EngFormatter())  # 14.4 k, 1.2 M
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel="parameters", ylabel=f"final {key}", title=f"final {key} vs parameter count")
    return _save(fig, ax, path)


def _save(fig, ax, path: Path) -> Path:  # noqa: ANN001 - matplotlib's Figure and Axes
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)  # many reports in one process (tests, notebooks) must not pile up open figures
    return path
