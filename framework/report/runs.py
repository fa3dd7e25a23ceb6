"""Collect the runs under the directories given to ``archlab report``: each offline W&B record with its Hydra run
directory (``.hydra/overrides.yaml``, ``hydra.yaml``'s config-group choices), and what the runs differ in."""
from __future__ import annotations

import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..wandb_records import RunRecord, find_runs, read_run
from . import keys as K


# The file ``--archive`` leaves in its folder: runs under it keep their archived names (``_label``).
ARCHIVE_MARKER = "ARCHIVE.md"


class ReportError(ValueError):
    """A bad argument of ``archlab report``: the message names it (the CLI prints it as one line, exit code 2)."""


@dataclass
class Run:
    """One run of the report: its W&B record and what its Hydra directory says about how it was started."""

    record: RunRecord
    run_dir: Path                  # outputs/<task>/runs/<time>/ or a sweep's job directory
    overrides: dict[str, str]      # the command line's overrides (``.hydra/overrides.yaml``), key -> value
    choices: dict[str, str]        # config group -> option (``model: gpt``), from ``.hydra/hydra.yaml``
    hydra_config: dict[str, Any] = field(default_factory=dict)  # ``.hydra/config.yaml`` (unresolved)
    label: str = ""                # short name in tables and legends, set by ``collect_runs``

    @property
    def architecture(self) -> str:
        """The model preset (``model=llama``), else the plugin's name: what plots colour by."""
        return self.choices.get("model") or str(self.record.config.get("plugin_name") or "?")

    def value(self, key: str) -> str:
        """The run's value of an override key: the group's option (``model``), else the resolved config value
        (the W&B config), else the raw ``.hydra/config.yaml`` value; "" where the run has no such key."""
        if key in self.choices:
            return str(self.choices[key])
        for config in (self.record.config, self.hydra_config):
            found = _dotted(config, key)
            if found is not _ABSENT:
                return "null" if found is None else str(found)  # as the override is written
        return self.overrides.get(key, "")

    def series(self, key: str) -> list[tuple[int, float]]:
        """(Lightning step, value) of a numeric key; wandb's own step for runs logged without Lightning."""
        return self.record.series(key, step_key=K.STEP) or self.record.series(key)

    def timed_series(self, key: str) -> list[tuple[float, float]]:
        """(seconds since the run started, value) of a numeric key."""
        return [(t, v) for t, v in ((row.get(K.RUNTIME), row.get(key)) for row in self.record.history)
                if isinstance(t, (int, float)) and isinstance(v, (int, float))]

    def final(self, key: str) -> float | None:
        points = self.series(key)
        return points[-1][1] if points else None

    def best(self, key: str) -> float | None:
        points = self.series(key)
        return min(v for _, v in points) if points else None

    def median(self, key: str) -> float | None:
        points = self.series(key)
        return statistics.median(v for _, v in points) if points else None

    def numeric_keys(self) -> set[str]:
        return set(self.record.keys()) - set(self.record.media_keys())

    @property
    def params(self) -> float | None:
        return self.final(K.PARAMS) or self.record.config.get("model_params")

    @property
    def active_params(self) -> float | None:
        key = next((k for k in sorted(self.numeric_keys()) if k.endswith(K.ACTIVE_PARAMS_SUFFIX)), None)
        return self.final(key) if key else None

    @property
    def steps(self) -> int:
        """Training steps the run reached: its last logged training step + 1 (validation values of a step are
        logged after it, under the next step's number)."""
        return max((step for step, _ in self.series(K.TRAIN_LOSS)), default=-1) + 1

    @property
    def wall_s(self) -> float:
        return max((row.get(K.RUNTIME, 0.0) for row in self.record.history), default=0.0)

    @property
    def status(self) -> str:
        code = self.record.exit_code
        return "unfinished" if code is None else "finished" if code == 0 else f"failed ({code})"


_ABSENT = object()


def collect_runs(dirs: list[str | Path]) -> list[Run]:
    """Every W&B run under ``dirs`` (run or sweep directories), in the order given, each directory's first started
    first.
    Raises ``ReportError`` for a directory that does not exist or holds no run."""
    seen: set[Path] = set()
    runs: list[Run] = []
    for d in dirs:
        path = Path(d)
        if not path.exists():
            raise ReportError(f"{d}: no such directory")
        if not path.is_dir():
            raise ReportError(f"{d}: not a directory (give a run or sweep directory)")
        found = find_runs(path)
        if not found:
            raise ReportError(f"{d}: no W&B runs under it (no wandb/offline-run-*/run-*.wandb)")
        records = []
        for file in (f for f in found if f.resolve() not in seen):  # overlapping directories: each run once
            seen.add(file.resolve())
            record = _read(file)
            if record is not None:
                records.append(record)
        # Oldest start first (logged, so a copied or archived run keeps its place), then by path.
        records.sort(key=lambda r: (r.started is None, r.started or 0.0, str(r.path)))
        runs += [_with_hydra(record) for record in records]
    if not runs:
        raise ReportError(f"{dirs[0]}: no readable W&B run under it")
    _label(runs)
    return runs


def differing_overrides(runs: list[Run]) -> list[str]:
    """Override keys (in command-line order) whose value is not the same in every run: the table's columns that
    say what each run is (``model`` aside: that is the architecture column)."""
    ordered: dict[str, None] = {}
    for run in runs:
        ordered.update(dict.fromkeys(run.overrides))
    # ``model`` is the table's arch column already.
    return [key for key in ordered if key != "model" and len({run.value(key) for run in runs}) > 1]


def _read(file: Path) -> RunRecord | None:
    try:
        return read_run(file)
    except ValueError:  # cut short (a crashed or still running job): what it logged so far still counts
        try:
            return read_run(file, strict=False)
        except ValueError as err:
            print(f"archlab report: skipping {file}: {err}", file=sys.stderr)
            return None


def _with_hydra(record: RunRecord) -> Run:
    # The record is <run dir>/wandb/offline-run-*/run-*.wandb (the W&B logger's save_dir is the run directory).
    run_dir = record.path.parent.parent.parent if record.path.parent.parent.name == "wandb" else record.path.parent
    hydra = run_dir / ".hydra"
    overrides: dict[str, str] = {}
    for item in _yaml(hydra / "overrides.yaml") or []:
        key, sep, value = str(item).partition("=")
        key = key.lstrip("+~")
        if sep and key != "hydra" and not key.startswith(("hydra.", "hydra/")):
            overrides[key] = value
    choices = ((_yaml(hydra / "hydra.yaml") or {}).get("hydra", {}).get("runtime", {}).get("choices") or {})
    choices = {k: "null" if v is None else str(v) for k, v in choices.items() if not k.startswith("hydra/")}
    return Run(record, run_dir, overrides, choices, _yaml(hydra / "config.yaml") or {})


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _dotted(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def archive_root(run_dir: Path) -> Path | None:
    """The ``--archive`` folder holding this run (marked by ARCHIVE_MARKER), if it is an archived run."""
    for parent in run_dir.resolve().parents:
        if (parent / ARCHIVE_MARKER).is_file():
            return parent
    return None


def _label(runs: list[Run]) -> None:
    """Name each run by its directory relative to what all share (``sweep/3``), or its W&B id if that is empty.
    An archived run keeps the name it was archived under (its folder in the archive), so a study can add a chunk
    of new runs to its archive: those are named from one level higher (``<sweep dir>/3``), beside the old ones."""
    roots = [archive_root(run.run_dir) for run in runs]
    fresh = [run for run, root in zip(runs, roots) if root is None]
    for run, root in zip(runs, roots):
        if root is not None:
            run.label = str(run.run_dir.resolve().relative_to(root))
    if fresh:
        dirs = [run.run_dir.resolve() for run in fresh]
        common = Path(*_common_parts(dirs)) if len(dirs) > 1 else dirs[0].parent
        if len(fresh) < len(runs):  # beside archived runs: keep the sweep's own name in the label
            common = common.parent
        for run, d in zip(fresh, dirs):
            rel = str(d.relative_to(common)) if d != common else ""
            run.label = rel or run.record.run_id
    counts = Counter(run.label for run in runs)
    for run in runs:  # two W&B runs in one directory (overwrite=true): told apart by their ids
        if counts[run.label] > 1:
            run.label = f"{run.label}:{run.record.run_id}"


def _common_parts(paths: list[Path]) -> list[str]:
    parts = list(paths[0].parts)
    for p in paths[1:]:
        n = 0
        while n < min(len(parts), len(p.parts)) and parts[n] == p.parts[n]:
            n += 1
        parts = parts[:n]
    return parts or ["/"]
