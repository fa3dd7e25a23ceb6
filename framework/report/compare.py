"""What a study compares runs by: steps to reach a baseline's final loss (``--baseline``), one row per
configuration with the mean and range over a repeated key such as the seed (``--mean-over``), and the best run of
each configuration over a searched key such as the learning rate (``--best-over``)."""
from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass

from . import keys as K
from .runs import ReportError, Run, differing_overrides
from .table import Column, Value, cell


@dataclass(frozen=True)
class Baseline:
    """The runs whose final val/loss the others race to (``--baseline KEY=VALUE``, e.g. ``study/moe_vs_dense=dense``)."""

    key: str
    value: str
    target: float     # the mean final val/loss of the baseline runs
    steps: float      # their mean training steps

    @classmethod
    def of(cls, text: str, runs: list[Run]) -> Baseline:
        key, sep, value = text.partition("=")
        if not sep or not key or not value:
            raise ReportError(f"--baseline {text!r}: expected KEY=VALUE (an override and its value, e.g. model=gpt)")
        chosen = [run for run in runs if run.value(key) == value]
        if not chosen:
            seen = sorted({run.value(key) for run in runs} - {""})
            raise ReportError(f"--baseline {text}: no run has {key}={value}"
                              + (f"; its values here: {', '.join(seen)}" if seen else f"; no run sets {key}"))
        finals = [loss for loss in (run.final(K.VAL_LOSS) for run in chosen) if loss is not None]
        if not finals:
            raise ReportError(f"--baseline {text}: its runs logged no {K.VAL_LOSS}")
        return cls(key, value, statistics.fmean(finals), statistics.fmean(run.steps for run in chosen))

    def columns(self) -> list[Column]:
        """(header, value of a run): the first step whose val/loss is at or below the target, and how many times
        fewer steps that is than the baseline took."""
        def steps_to(run: Run) -> int | None:
            # A validation is logged under its last training step's 0-based index: + 1 is the steps trained.
            return next((step + 1 for step, loss in run.series(K.VAL_LOSS) if loss <= self.target), None)

        def speedup(run: Run) -> float | None:
            reached = steps_to(run)
            return self.steps / reached if reached else None

        name = f"{self.key}={self.value}"
        return [(f"steps to {name} final {K.VAL_LOSS}", steps_to), (f"x fewer steps than {name}", speedup)]


def mean_over(key: str, header: list[str], body: list[list[Value]]) -> tuple[list[str], list[list[Value]]]:
    """One row per configuration: rows equal in every text column but ``key`` and ``run`` are merged; a numeric
    column becomes "mean (min-max)" where the runs differ. The first column counts the runs merged."""
    if key not in header:
        raise ReportError(f"--mean-over {key}: not a column of this report (the runs do not differ in it); "
                          f"columns: {', '.join(header)}")
    drop = {header.index("run"), header.index(key)}
    kept = [i for i in range(len(header)) if i not in drop]
    numeric = {i for i in kept if all(v is None or isinstance(v, (int, float)) for v in (row[i] for row in body))}
    groups: dict[tuple, list[list[Value]]] = {}
    for row in body:
        groups.setdefault(tuple(str(row[i]) for i in kept if i not in numeric), []).append(row)
    out_header = ["runs"] + [header[i] for i in kept]
    out_body = [[len(rows)] + [_merge([row[i] for row in rows]) if i in numeric else rows[0][i] for i in kept]
                for rows in groups.values()]
    return out_header, out_body


def _merge(values: list[Value]) -> Value:
    present = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not present:
        return None
    low, high, mean = min(present), max(present), statistics.fmean(present)
    if low == high and len(present) == len(values):
        return values[0]
    missing = len(values) - len(present)
    return f"{cell(mean)} ({cell(low)}-{cell(high)})" + (f", {missing} without" if missing else "")


def best_over(key: str, by: str, runs: list[Run]) -> list[tuple[int, int]]:
    """(index, runs compared) of the best run of each configuration, in run order: runs with the same architecture and the same value of every
    differing override but ``key`` compete, and the best final ``by`` wins (the highest for accuracies, the lowest
    for losses: ``keys.higher_is_better``; the first run on ties). A configuration whose runs all lack ``by`` keeps
    its first run, so no configuration silently drops out of the table."""
    others = [k for k in differing_overrides(runs) if k != key]
    sign = 1.0 if K.higher_is_better(by) else -1.0
    best: dict[tuple[str, ...], int] = {}
    compared: Counter[tuple[str, ...]] = Counter()
    for i, run in enumerate(runs):
        config = (run.architecture, *(run.value(k) for k in others))
        compared[config] += 1
        if config not in best or _score(run, by, sign) > _score(runs[best[config]], by, sign):
            best[config] = i
    return sorted((i, compared[config]) for config, i in best.items())


def _score(run: Run, key: str, sign: float) -> float:
    value = run.final(key)
    return -math.inf if value is None or not math.isfinite(value) else sign * value
