"""``archlab train -m``: every job of a sweep checked before the first one starts, a failing job recorded instead
of ending the sweep, and a summary table at the end.

The jobs are the ones Hydra's basic sweeper launches: the cross product of the comma-separated overrides (and of
``hydra.sweeper.params``). Other sweepers (Optuna, ...) choose their jobs as they go: those are checked one by one
as they start.
"""
from __future__ import annotations

from dataclasses import dataclass

from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from ..config_schema import ConfigError
from ..data.errors import DataConfigError


@dataclass
class JobResult:
    number: int
    overrides: list[str]
    status: str               # ok | failed | diverged | config error
    val_loss: float | None = None
    error: str = ""


RESULTS: list[JobResult] = []  # this process's sweep, in launch order (the basic launcher runs jobs in-process)


def _is_hydra(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def sweep_jobs(overrides: list[str]) -> list[list[str]] | None:
    """The overrides of every job the basic sweeper will launch, in order; None under another sweeper."""
    if any(o.split("=", 1)[0].lstrip("+~") == "hydra/sweeper" for o in overrides):
        return None
    with initialize_config_module(config_module="conf", version_base="1.3"):
        base = compose(config_name="train", overrides=[o for o in overrides if "," not in o and not _is_hydra(o)],
                       return_hydra_config=True)
    params = [f"{k}={v}" for k, v in (base.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + [o for o in overrides if not _is_hydra(o)])
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def check_jobs(jobs: list[list[str]]) -> list[str]:
    """One line per job whose config is wrong (``job N (overrides): field: message``); [] when all are good."""
    from ..train import check_config

    problems = []
    shared = set.intersection(*(set(job) for job in jobs)) if len(jobs) > 1 else set()
    for number, job in enumerate(jobs):
        named = " ".join(o for o in job if o not in shared) or "no overrides"  # what makes this job itself
        try:
            with initialize_config_module(config_module="conf", version_base="1.3"):
                cfg = compose(config_name="train", overrides=job)
            with open_dict(cfg):
                cfg.paths.output_dir = "<sweep job directory>"  # made by Hydra when the job starts
            check_config(cfg, output_dir_exists=False)
        except (ConfigError, DataConfigError) as err:
            problems.append(f"job {number} ({named}): {err}")
        except Exception as err:  # noqa: BLE001 - e.g. Hydra's composition errors: said per job, not raised
            problems.append(f"job {number} ({named}): {type(err).__name__}: {err}")
    return problems


def record_failure(number: int, overrides: list[str], status: str, err: BaseException) -> None:
    RESULTS.append(JobResult(number, overrides, status, error=f"{type(err).__name__}: {err}"))


def summary() -> str:
    """The sweep's table: job, overrides, status, final val/loss (and the error of failed jobs)."""
    rows = [("job", "overrides (those the jobs differ in)", "status", "val/loss")]
    shared = set.intersection(*(set(r.overrides) for r in RESULTS)) if len(RESULTS) > 1 else set()
    for r in RESULTS:
        rows.append((str(r.number), " ".join(o for o in r.overrides if o not in shared) or "-", r.status,
                     "-" if r.val_loss is None else f"{r.val_loss:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = [r for r in RESULTS if r.status != "ok"]
    lines += [f"job {r.number} {r.status}: {r.error}" for r in failed]
    lines.append(f"{len(RESULTS) - len(failed)} of {len(RESULTS)} jobs ok" + (f", {len(failed)} failed" if failed else ""))
    return "\n".join(lines)
