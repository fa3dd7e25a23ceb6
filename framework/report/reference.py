"""Published points to draw beside a study's own (``archlab report --reference FILE.csv``): a CSV with the columns
``source,group,panel,x,y``, one row per point read off a paper's figure, e.g.
``Zoology fig. 2,attention,t64,64,1.0``. ``group`` names the line (a value of ``--colour-by`` draws in that
group's colour); ``panel`` is a value of ``--panel-by`` (empty: the point belongs in every panel)."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from .runs import ReportError

COLUMNS = ("source", "group", "panel", "x", "y")


@dataclass(frozen=True)
class ReferencePoint:
    source: str   # where the number comes from: "Zoology fig. 2"
    group: str    # the line it belongs to: "attention", "RWKV"
    panel: str    # the --panel-by value it belongs to; "" for every panel
    x: float
    y: float


def read_reference(path: Path) -> list[ReferencePoint]:
    """The points of a reference CSV; a ReportError naming the file, line and field for anything malformed."""
    if not path.is_file():
        raise ReportError(f"--reference {path}: no such file")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ReportError(f"--reference {path}: missing column(s) {', '.join(missing)}; "
                              f"expected the header {','.join(COLUMNS)}")
        points = []
        for line, row in enumerate(reader, start=2):
            numbers = {}
            for field in ("x", "y"):
                try:
                    numbers[field] = float(row[field])
                except (TypeError, ValueError):
                    numbers[field] = math.nan
                if not math.isfinite(numbers[field]):
                    raise ReportError(f"--reference {path}: line {line}: {field}={row[field]!r} is not a number")
            points.append(ReferencePoint(row["source"], row["group"], row["panel"] or "", numbers["x"], numbers["y"]))
    if not points:
        raise ReportError(f"--reference {path}: no points (only a header)")
    return points
