"""Reports and dashboards from W&B runs: ``archlab report`` (tables and plots from offline records, ``runs``,
``table``, ``plots``, ``compare``, ``archive``, ``write``) and ``archlab dashboard`` (the lab's W&B workspace in code, ``dashboard``)."""
from __future__ import annotations

from .runs import ReportError, Run, collect_runs, differing_overrides
from .write import ReportOptions, write_report

__all__ = ["ReportError", "Run", "collect_runs", "differing_overrides", "ReportOptions", "write_report"]
