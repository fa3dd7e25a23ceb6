"""``archlab report --archive``: keep the raw inputs of a report next to it, so that the same command on the
archive regenerates the table byte for byte (a study's results stay checkable after ``outputs/`` is gone).

Per run, ``<out>/runs/<label>/`` receives what ``collect_runs`` reads: the W&B log gzipped
(``wandb/offline-run-*/run-<id>.wandb.gz``, about a quarter of its size) and the Hydra files
(``.hydra/overrides.yaml``, ``config.yaml`` and the config-group choices of ``hydra.yaml``; the rest of hydra.yaml
is this machine's paths and Hydra's own settings, which no report reads)."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import yaml

from .runs import ARCHIVE_MARKER, ReportError, Run

ARCHIVE_DIR = "runs"
_MARKER_TEXT = """# Archived runs (`archlab report --archive`)

Each folder is one run: its W&B log (gzipped) and the Hydra files a report reads. `archlab report` on this folder
regenerates the report it was archived with; runs under it keep these folder names as their labels, so new runs can
be added beside them (`archlab report <this folder> <new sweep dir> --out <its parent> --archive`). docs/report.md.
"""


def archive_runs(runs: list[Run], out: Path) -> Path:
    """Copy each run's inputs into ``out/runs/<label>/``; returns that folder. A run already archived there (the
    report is being regenerated from its archive) is left as it is; a different run in its place is an error, so
    nothing archived is overwritten."""
    root = out / ARCHIVE_DIR
    planned = [(run, root / run.label.replace(":", "_")) for run in runs]
    for run, dest in planned:
        if dest.exists() and dest.resolve() != run.run_dir.resolve():
            raise ReportError(f"--archive: {dest} already holds a run; remove it or give another --out")
    root.mkdir(parents=True, exist_ok=True)
    (root / ARCHIVE_MARKER).write_text(_MARKER_TEXT)
    for run, dest in planned:
        if dest.exists():  # it is the run's own directory: the report was built from this archive
            continue
        record = run.record.path
        logs = dest / "wandb" / record.parent.name
        logs.mkdir(parents=True)
        name = record.name if record.suffix == ".gz" else record.name + ".gz"
        # mtime=0: the gzip header then holds no time, so archiving the same run twice gives the same bytes.
        (logs / name).write_bytes(record.read_bytes() if record.suffix == ".gz"
                                  else gzip.compress(record.read_bytes(), mtime=0))
        hydra, kept = run.run_dir / ".hydra", dest / ".hydra"
        kept.mkdir()
        for file in ("overrides.yaml", "config.yaml"):
            if (hydra / file).is_file():
                shutil.copyfile(hydra / file, kept / file)
        if run.choices:
            choices = {"hydra": {"runtime": {"choices": run.choices}}}
            (kept / "hydra.yaml").write_text(yaml.safe_dump(choices, sort_keys=False))
    return root
