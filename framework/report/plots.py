"""The report's PNG plots: val/loss per run against steps and wall-clock, final val/loss against parameter count,
and one plot per ``--metric``. Runs of one architecture (or of one value of ``--colour-by``) share a colour; line
styles tell them apart. ``--plot-against KEY`` adds one more: a final metric against a numeric override (accuracy
against width), a line per colour group, a panel per value of ``--panel-by``, published points beside ours."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import keys as K
from .reference import ReferencePoint
from .runs import ReportError, Run

_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass(frozen=True)
class Against:
    """``--plot-against KEY``: the final ``metric`` of each run against its (numeric) value of ``key``."""

    key: str
    metric: str = K.VAL_LOSS                                    # --best-by, else val/loss
    panel_by: str | None = None                                 # --panel-by: one panel per value
    reference: list[ReferencePoint] = field(default_factory=list)  # --reference: published points

    def x(self, run: Run) -> float:
        text = run.value(self.key)
        try:
            return float(text)
        except ValueError:
            raise ReportError(f"--plot-against {self.key}: run {run.label} has {self.key}={text!r}, not a number "
                              "(the x axis needs numeric values)") from None


def write_plots(runs: list[Run], out: Path, metrics: list[str], colour_by: str | None = None,
                against: Against | None = None) -> list[Path]:
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
    if against:
        written.append(_against(runs, against, out / f"{slug(against.metric)}_vs_{slug(against.key)}.png", group,
                                what))
    return [p for p in written if p is not None]


def slug(key: str) -> str:
    """A log key as a file name part: ``moe/load_cv/mean`` -> ``moe_load_cv_mean``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")


Group = Callable[[Run], str]  # what colours a run: its architecture, or its value of --colour-by


def _colours(runs: list[Run], group: Group) -> dict[str, str]:
    return colours_for([group(run) for run in runs])


def colours_for(groups: list[str]) -> dict[str, str]:
    """A colour per distinct group, in order of first appearance, none repeated up to 20 groups."""
    names = list(dict.fromkeys(groups))
    if len(names) <= 10:
        return {name: f"C{i}" for i, name in enumerate(names)}
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"].colors  # dark shades first, then light: 20 distinct before a repeat
    palette = [matplotlib.colors.to_hex(c) for c in (*tab20[0::2], *tab20[1::2])]
    return {name: palette[i % 20] for i, name in enumerate(names)}


_REFERENCE_MARKERS = ("s", "^", "D", "v", "P", "X")  # published groups that are none of ours: grey, one marker each


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


def against_points(runs: list[Run], against: Against, group: Group) -> dict[tuple[str, str], dict[float, float]]:
    """(panel, group) -> x -> the best final metric of the runs there (runs without a finite value left out)."""
    sign = 1.0 if K.higher_is_better(against.metric) else -1.0
    panel_of = (lambda r: r.value(against.panel_by)) if against.panel_by else (lambda r: "")
    best: dict[tuple[str, str], dict[float, float]] = {}
    for run in runs:
        y = run.final(against.metric)
        if y is None or not math.isfinite(y):
            continue
        line = best.setdefault((panel_of(run), group(run)), {})
        x = against.x(run)
        if x not in line or sign * y > sign * line[x]:
            line[x] = y
    return best


def _against(runs: list[Run], against: Against, path: Path, group: Group, what: str) -> Path | None:
    """One panel per value of ``panel_by``; in each, a line per group through the best final metric at each x
    (the best run, as --best-over picks it: runs of a group at one x differ in a searched key such as the learning
    rate); reference points dashed, hollow, in their group's colour when it is one of ours, else grey with a
    marker of their own."""
    import matplotlib.pyplot as plt

    best = against_points(runs, against, group)
    if not best:
        return None
    panels = list(dict.fromkeys(panel for panel, _ in best))
    colours, markers = _colours(runs, group), {}
    for name in dict.fromkeys(p.group for p in against.reference):
        if name not in colours:
            markers[name] = _REFERENCE_MARKERS[len(markers) % len(_REFERENCE_MARKERS)]
            colours[name] = "k"
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 2.0, 4.2), sharey=True, squeeze=False)
    xs = {x for line in best.values() for x in line} | {p.x for p in against.reference}
    for ax, panel in zip(axes[0], panels):
        for (where, name), line in best.items():
            if where == panel:
                ax.plot(sorted(line), [line[x] for x in sorted(line)], color=colours[name], marker="o",
                        markersize=4, linewidth=1.4, label=name)
        sources: dict[tuple[str, str], list[ReferencePoint]] = {}
        for point in against.reference:
            if point.panel in ("", panel):
                sources.setdefault((point.source, point.group), []).append(point)
        for (source, name), points in sources.items():
            points.sort(key=lambda p: p.x)
            ax.plot([p.x for p in points], [p.y for p in points], color=colours[name], linestyle="--", marker=markers.get(name, "s"),
                    markerfacecolor="none", markersize=5, linewidth=1.0, label=f"{name} ({source})")
        if min(xs) > 0 and max(xs) >= 4 * min(xs):  # widths double: even spacing on a log-2 axis
            ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(xs), [f"{x:g}" for x in sorted(xs)])
        ax.minorticks_off()
        ax.set(xlabel=against.key, title=f"{against.panel_by}={panel}" if against.panel_by else None)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"final {against.metric} (best run per point)")
    handles = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), fontsize=7, loc="center right", title=what, title_fontsize=7)
    fig.suptitle(f"final {against.metric} vs {against.key}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.9 / (3.6 * len(panels) + 2.0), 1))  # room for the legend
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _save(fig, ax, path: Path) -> Path:  # noqa: ANN001 - matplotlib's Figure and Axes
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)  # many reports in one process (tests, notebooks) must not pile up open figures
    return path
