"""The report's table: one row per run, as Markdown (rounded, for reading) and CSV (full precision, for tools)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Callable

from . import keys as K
from .runs import Run, differing_overrides

Value = Any  # str, int, float or None (a run that did not log it: an empty cell)


Column = tuple[str, Callable[[Run], Value]]  # (header, the run's value)


def columns(runs: list[Run], metrics: list[str], added: list[Column] = ()) -> list[Column]:
    """(header, value of a run) for every column; optional ones (active params, bpb, plugin metrics) only when some
    run logged them; ``added`` (a baseline's columns) after the val/loss and val/bpb ones."""
    logged = set().union(*(run.numeric_keys() for run in runs))
    cols: list[Column] = [("run", lambda r: r.label), ("arch", lambda r: r.architecture)]
    cols += [(key, lambda r, key=key: r.value(key)) for key in differing_overrides(runs)]
    cols += [("status", lambda r: r.status), ("steps", lambda r: r.steps), ("params", lambda r: r.params)]
    if any(k.endswith(K.ACTIVE_PARAMS_SUFFIX) for k in logged):
        cols.append(("active params", lambda r: r.active_params))
    cols += [("tokens/s", lambda r: r.median(K.TOKENS_PER_SEC)), ("wall s", lambda r: r.wall_s)]
    for key in (K.VAL_LOSS, K.VAL_BPB):
        if key in logged or key == K.VAL_LOSS:  # val/loss always: a run without one shows the gap
            cols += [(f"best {key}", lambda r, key=key: r.best(key)), (f"final {key}", lambda r, key=key: r.final(key))]
    cols += list(added)
    # --metric keys after the headline ones; the val keys above already have their columns.
    extra = [k for k in sorted(logged) if K.is_headline(k) and k not in metrics]
    extra += [k for k in metrics if k not in (K.VAL_LOSS, K.VAL_BPB)]
    cols += [(key, lambda r, key=key: r.final(key)) for key in extra]
    return cols


def rows(runs: list[Run], metrics: list[str], added: list[Column] = ()) -> tuple[list[str], list[list[Value]]]:
    cols = columns(runs, metrics, added)
    return [name for name, _ in cols], [[get(run) for _, get in cols] for run in runs]


def markdown(header: list[str], body: list[list[Value]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v).replace("|", "\\|") for v in row) + " |" for row in body]
    return "\n".join(lines)


def write_csv(path: Path, header: list[str], body: list[list[Value]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        # repr of a float round-trips exactly: the CSV holds the logged values, not rounded ones.
        writer.writerows([["" if v is None else repr(v) if isinstance(v, float) else v for v in row] for row in body])


def cell(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isfinite(value):
        if value.is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
