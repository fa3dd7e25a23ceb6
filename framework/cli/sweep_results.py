"""What each job of an ``archlab train -m`` sweep ended with, wherever it ran, and the table at the end of the sweep.

Jobs may run in this process (Hydra's basic launcher), in worker processes (joblib) or on other machines
(submitit), so a job's result is a file: ``<job dir>/job_result.json``. The sweeping process learns the sweep
directory from a Hydra callback (``SweepRecorder``, listed in conf/hydra/default.yaml) and reads the files of
this sweep back (each names the sweep's id, so an older sweep in the same directory is not counted).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

RESULT_FILE = "job_result.json"
# This process's view of the sweep: {"dir": sweep dir, "id": sweep id}. Set in the sweeping process by
# on_multirun_start, and in every job's process by on_job_start (the callback travels to the job pickled).
CURRENT: dict[str, Any] = {}


@dataclass
class JobResult:
    number: int
    overrides: list[str]
    status: str               # ok | failed | diverged | config error | requeued | no result
    val_loss: float | None = None
    error: str = ""
    sweep_id: str | None = None


class SweepRecorder(Callback):
    """Hydra callback: gives the sweep an id and tells the sweeping process where its jobs' results land."""

    def __init__(self) -> None:
        self.sweep_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_id = uuid.uuid4().hex
        CURRENT.update(dir=Path(str(config.hydra.sweep.dir)), id=self.sweep_id)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep_id is not None:  # a multirun job, maybe in another process
            CURRENT["id"] = self.sweep_id


def record(result: JobResult, output_dir: str | Path) -> None:
    """Write a job's result where the sweeping process will read it (the job's own directory)."""
    result.sweep_id = CURRENT.get("id")
    path = Path(output_dir) / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{RESULT_FILE}.tmp")
    tmp.write_text(json.dumps(asdict(result), indent=1))
    tmp.replace(path)  # whole or absent: a requeued job writes its result again


def was_requeued(output_dir: str | Path) -> bool:
    """Whether this job of this sweep is starting again after submitit requeued it (its last result says so and its
    last.ckpt is there): it then continues with resume=true."""
    path = Path(output_dir) / RESULT_FILE
    try:
        last = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return (last.get("status") == "requeued" and last.get("sweep_id") == CURRENT.get("id")
            and (Path(output_dir) / "checkpoints" / "last.ckpt").is_file())


def collect(expected: int | None = None) -> list[JobResult]:
    """This sweep's job results, by job number; with ``expected`` jobs, each missing one is a "no result" row
    (its process died before it could write one: killed, out of memory, a lost node)."""
    sweep_dir, sweep_id = CURRENT.get("dir"), CURRENT.get("id")
    found: dict[int, JobResult] = {}
    if sweep_dir is not None and Path(sweep_dir).is_dir():
        for path in Path(sweep_dir).rglob(RESULT_FILE):
            try:
                result = JobResult(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            if result.sweep_id == sweep_id:
                found[result.number] = result
    for number in range(expected or 0):
        found.setdefault(number, JobResult(number, [], "no result", error="the job wrote no result (its process "
                                                                           "ended before it could: see its log)"))
    return [found[n] for n in sorted(found)]


def summary(results: list[JobResult]) -> str:
    """The sweep's table: job, overrides, status, final val/loss (and the error of failed jobs)."""
    rows = [("job", "overrides (those the jobs differ in)", "status", "val/loss")]
    known = [set(r.overrides) for r in results if r.overrides]
    shared = set.intersection(*known) if len(known) > 1 else set()
    for r in results:
        rows.append((str(r.number), " ".join(o for o in r.overrides if o not in shared) or "-", r.status,
                     "-" if r.val_loss is None else f"{r.val_loss:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = [r for r in results if r.status != "ok"]
    lines += [f"job {r.number} {r.status}: {r.error}" for r in failed]
    lines.append(f"{len(results) - len(failed)} of {len(results)} jobs ok" + (f", {len(failed)} failed" if failed else ""))
    return "\n".join(lines)
