"""Round-trip real offline W&B runs through framework.wandb_records.

Each `wandb.init` costs ~0.5 s offline, and importing Lightning ~3 s, so the file makes four
runs in all: one rich run shared by most tests, two sequential runs, one via WandbLogger.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

wandb = pytest.importorskip("wandb")

from framework.wandb_records import RunRecord, find_runs, read_run, read_runs  # noqa: E402

STEPS = 200  # enough rows for the log to span several 32 KiB blocks
VAL_EVERY = 50
MEDIA_STEP = STEPS
WAIT_S = 30.0  # run.finish() returns before wandb-core has flushed the log
CUT_IN_BLOCK_2 = 32 * 1024 + 7 + 1  # one byte into the first chunk body of the second block
CONFIG = {
    "model": {"d_model": 64, "layers": [1, 2], "act": "gelu", "rope": None},
    "optim": {"lr": 1e-3, "betas": [0.9, 0.95]},
    "seed": 7,
    "compile": False,
}


def train_loss(step: int) -> float:
    return 1.0 / (step + 1)


def val_loss(step: int) -> float:
    return 0.5 + step / 1000


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Offline, quiet, and no wandb state written outside tmp."""
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_CONSOLE", "off")  # console capture is not under test
        for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
            mp.setenv(var, str(home))
        yield
        wandb.teardown()  # drop wandb's process-wide settings, which captured this env


@pytest.fixture(scope="module")
def run_file(wandb_env: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rich")
    run = wandb.init(
        dir=root, project="archlab-test", group="grp", tags=["a", "b"], name="rich",
        job_type="train", config=CONFIG,
    )
    for step in range(STEPS):
        run.log({"train/loss": train_loss(step), "train/tokens": step * 512}, step=step)
        if step % VAL_EVERY == 0:  # a second log call at the same step: wandb merges the rows
            run.log({"val/loss": val_loss(step)}, step=step)
    pixels = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) * 5
    run.log(
        {"weights": wandb.Histogram(np.arange(10)), "sample": wandb.Image(pixels),
         "grad": {"norm": 2.5, "max": 9.0}},
        step=MEDIA_STEP,
    )
    run.summary["best/val_loss"] = 0.125
    run.finish()
    (path,) = find_runs(root)
    assert read_run(path, wait_s=WAIT_S).finished  # wandb-core closes the file after finish()
    return path


@pytest.fixture(scope="module")
def rich(run_file: Path) -> RunRecord:
    return read_run(run_file)


def test_metadata_and_config(rich: RunRecord) -> None:
    assert rich.run_id and rich.path.name == f"run-{rich.run_id}.wandb"
    assert (rich.project, rich.name, rich.group, rich.job_type) == ("archlab-test", "rich", "grp", "train")
    assert rich.tags == ["a", "b"]
    assert rich.config == CONFIG  # nested dicts, lists, None and bools decoded; no "_wandb"
    assert rich.finished and rich.exit_code == 0


def test_history_steps_and_values(rich: RunRecord) -> None:
    assert rich.path.stat().st_size > 2 * 32 * 1024  # records crossed block boundaries
    steps = [row["_step"] for row in rich.history]
    assert steps == list(range(STEPS + 1))
    for row in rich.history[:STEPS]:
        step = row["_step"]
        assert row["train/loss"] == train_loss(step)  # exact: JSON round-trips doubles
        assert row["train/tokens"] == step * 512 and isinstance(row["train/tokens"], int)
        # Both log calls of a step land in one row.
        assert ("val/loss" in row) == (step % VAL_EVERY == 0)
    assert rich.series("train/loss") == [(s, train_loss(s)) for s in range(STEPS)]
    assert rich.series("val/loss") == [(s, val_loss(s)) for s in range(0, STEPS, VAL_EVERY)]
    assert rich.series("grad.norm") == [(MEDIA_STEP, 2.5)]  # dotted path into a logged dict
    assert rich.keys() == sorted(
        ["train/loss", "train/tokens", "val/loss", "weights", "sample", "grad"]
    )
    with pytest.raises(TypeError, match="sample"):
        rich.series("sample")


def test_summary(rich: RunRecord) -> None:
    last = STEPS - 1
    assert rich.summary["best/val_loss"] == 0.125
    assert rich.summary["train/loss"] == train_loss(last)
    assert rich.summary["val/loss"] == val_loss(last - last % VAL_EVERY)
    assert rich.summary["grad"] == {"norm": 2.5, "max": 9.0}
    assert rich.summary["_step"] == MEDIA_STEP
    assert "_wandb" not in rich.summary


def test_media(rich: RunRecord) -> None:
    assert rich.media_keys() == ["sample", "weights"]
    [(step, hist)] = rich.media("weights")
    counts, edges = np.histogram(np.arange(10), bins=64)
    assert step == MEDIA_STEP and hist["_type"] == "histogram"
    assert hist["values"] == counts.tolist() and hist["bins"] == pytest.approx(edges.tolist())
    [(step, image)] = rich.media("sample")
    assert step == MEDIA_STEP and image["_type"] == "image-file"
    assert (image["width"], image["height"]) == (4, 4)
    assert image["path"] in rich.files and (rich.files_dir / image["path"]).is_file()


def test_agrees_with_wandb_leet(rich: RunRecord) -> None:
    """Cross-check against wandb-core's own reader (flattens nested keys with ".")."""
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(rich.path)],
        capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0:
        pytest.skip(f"wandb leet inspect unavailable: {proc.stderr[-300:]}")
    rows = [
        json.loads(line)["history"]["item"]
        for line in proc.stdout.splitlines()
        if json.loads(line).get("type") == "history"
    ]
    assert len(rows) == len(rich.history)
    for theirs, ours in zip(rows, rich.history):
        scalars = {k: v for k, v in ours.items() if not isinstance(v, dict)}
        assert {k: v for k, v in theirs.items() if "." not in k} == scalars
        assert theirs.get("grad.norm") == ours.get("grad", {}).get("norm")


def test_two_runs_in_one_process(wandb_env: None, tmp_path: Path) -> None:
    for i in range(2):
        run = wandb.init(dir=tmp_path, project="seq", name=f"job{i}", config={"job": {"id": i}})
        for step in range(3):
            run.log({"loss": 10 * i + step})
        run.finish()
    paths = find_runs(tmp_path)
    assert len(paths) == 2  # the latest-run symlink is not followed into a duplicate
    records = read_runs(tmp_path, wait_s=WAIT_S)
    assert [r.name for r in records] == ["job0", "job1"]
    assert records[0].run_id != records[1].run_id
    for i, rec in enumerate(records):
        assert rec.config == {"job": {"id": i}}
        assert rec.series("loss") == [(step, 10 * i + step) for step in range(3)]
        assert rec.summary["loss"] == 10 * i + 2
    assert read_run(paths[1].parent).run_id == records[1].run_id  # a run directory works too


def test_lightning_wandb_logger_round_trip(wandb_env: None, tmp_path: Path) -> None:
    loggers = pytest.importorskip("lightning.pytorch.loggers")
    logger = loggers.WandbLogger(
        offline=True, save_dir=str(tmp_path), project="archlab", name="lit", group="sweep",
        tags=["t"], job_type="train",
    )
    hparams = {"model": {"d_model": 32, "act": "relu"}, "optimizer": {"lr": 0.01}, "seed": 1}
    logger.log_hyperparams(hparams)
    for step in (0, 5, 10):
        logger.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    logger.log_metrics({"val/loss": 0.25}, step=10)
    # WandbLogger.finalize does not end the wandb run; the framework must (or the next run resumes it).
    logger.experiment.finish()

    (rec,) = read_runs(tmp_path, wait_s=WAIT_S)
    assert (rec.project, rec.name, rec.group, rec.tags, rec.job_type) == ("archlab", "lit", "sweep", ["t"], "train")
    assert rec.config == hparams
    gs = "trainer/global_step"
    assert rec.series("train/loss", step_key=gs) == [(0, 1.0), (5, 1 / 6), (10, 1 / 11)]
    assert rec.series("val/loss", step_key=gs) == [(10, 0.25)]
    # Lightning lets wandb count _step, so val/loss gets a row of its own.
    assert rec.series("val/loss") == [(3, 0.25)]
    assert rec.summary["train/loss"] == 1 / 11 and rec.summary["val/loss"] == 0.25


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: b"", "empty file"),
        (lambda data: b"step,loss\n0,1.0\n", "not a W&B run file"),
        (lambda data: data[:7], None),  # header only: a valid log with no records
        (lambda data: data[: len(data) - 5], "truncated"),
        (lambda data: data[: CUT_IN_BLOCK_2], "truncated"),
        (lambda data: data[:100] + bytes([data[100] ^ 0xFF]) + data[101:], "corrupt"),
    ],
    ids=["empty", "csv", "header-only", "cut-end", "cut-mid", "flipped-byte"],
)
def test_damaged_files(run_file: Path, tmp_path: Path, damage: Any, message: str | None) -> None:
    bad = tmp_path / "run-bad.wandb"
    bad.write_bytes(damage(run_file.read_bytes()))
    if message is None:
        rec = read_run(bad)
        assert rec.history == [] and not rec.finished
        return
    with pytest.raises(ValueError, match=message) as err:
        read_run(bad)
    assert str(bad) in str(err.value)


def test_lenient_read_keeps_the_intact_prefix(run_file: Path, tmp_path: Path) -> None:
    partial = tmp_path / "run-partial.wandb"
    partial.write_bytes(run_file.read_bytes()[:CUT_IN_BLOCK_2])
    rec = read_run(partial, strict=False)
    assert rec.run_id and rec.config == CONFIG and not rec.finished
    assert 0 < len(rec.history) < STEPS
    assert rec.series("train/loss") == [(s, train_loss(s)) for s in range(len(rec.history))]


def test_wait_for_a_log_still_being_written(run_file: Path, tmp_path: Path) -> None:
    full = run_file.read_bytes()
    growing = tmp_path / "run-growing.wandb"
    growing.write_bytes(full[:7])  # what wandb-core has on disk right after finish() returns
    writer = threading.Timer(0.3, lambda: growing.write_bytes(full))
    writer.start()
    try:
        rec = read_run(growing, wait_s=WAIT_S)
    finally:
        writer.join()
    assert rec.finished and len(rec.history) == STEPS + 1
    flipped = tmp_path / "run-flipped.wandb"
    flipped.write_bytes(full[:100] + bytes([full[100] ^ 0xFF]) + full[101:])
    start = time.monotonic()
    with pytest.raises(ValueError, match="checksum"):  # damage, not lateness: no waiting
        read_run(flipped, wait_s=WAIT_S)
    assert time.monotonic() - start < 1.0


# --- a log written by hand: typed HistoryItem values, and no summary records -----------


def _write_log(path: Path, payloads: list[bytes]) -> None:
    """A minimal LevelDB-style writer, independent of the reader under test."""
    block = 32 * 1024
    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for payload in payloads:
        first = True
        while True:
            room = block - len(out) % block
            if room < 7:
                out += b"\0" * room
                continue
            frag, payload = payload[: room - 7], payload[room - 7 :]
            kind = (1 if not payload else 2) if first else (4 if not payload else 3)
            out += struct.pack("<IHB", zlib.crc32(frag, zlib.crc32(bytes([kind]))), len(frag), kind)
            out += frag
            first = False
            if not payload:
                break
    path.write_bytes(bytes(out))


def test_hand_written_log(tmp_path: Path) -> None:
    from wandb.proto import wandb_internal_pb2 as pb

    run = pb.Record()
    run.run.run_id, run.run.project = "abc123", "hand"
    item = run.run.config.update.add()
    item.key, item.value_json = "model", json.dumps({"d": 8})
    records = [run]
    for step in range(2):
        rec = pb.Record()
        rec.history.step.num = step
        for key, attr, value in [("loss", "number", 0.5 * step), ("n", "integer", step),
                                 ("tag", "text", "x"), ("ok", "boolean", True)]:
            it = rec.history.item.add()
            it.nested_key.append(key)
            if attr in pb.HistoryItem.DESCRIPTOR.fields_by_name:  # typed values: newer protos
                setattr(it, attr, value)
            else:
                it.value_json = json.dumps(value)
        it = rec.history.item.add()
        it.key, it.value_json = "big", json.dumps({"blob": "z" * 70_000})  # spans 3 blocks
        records.append(rec)
    path = tmp_path / "run-abc123.wandb"
    _write_log(path, [r.SerializeToString() for r in records])

    out = read_run(path)
    assert (out.run_id, out.project, out.config) == ("abc123", "hand", {"model": {"d": 8}})
    assert out.series("loss") == [(0, 0.0), (1, 0.5)]
    assert [row["_step"] for row in out.history] == [0, 1]  # step 0 is proto3's empty default
    assert out.history[1]["tag"] == "x" and out.history[1]["ok"] is True
    assert out.history[1]["big"]["blob"] == "z" * 70_000
    # No summary records: the summary is the last value of each key.
    assert out.summary["loss"] == 0.5 and out.summary["n"] == 1
    assert not out.finished


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        find_runs(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        read_run(tmp_path / "run-x.wandb")
    assert find_runs(tmp_path) == []
    with pytest.raises(ValueError, match="expected one"):
        read_run(tmp_path)
