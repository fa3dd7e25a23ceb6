"""Read offline W&B runs back into plain Python values.

An offline run leaves only ``wandb/offline-run-*/run-<id>.wandb``: a LevelDB-style log of protobuf
``Record`` messages (no config or summary JSON). wandb 0.31 ships no Python reader for it (only the Go
``wandb-core``, behind ``wandb leet inspect --json``), so the framing is parsed here and each record is
decoded with wandb's own ``wandb.proto.wandb_internal_pb2.Record``.

File layout (what wandb-core writes):
  * a 7-byte file header: ``b":W&B"``, magic ``0xBEE1`` (uint16 LE), version ``0`` (uint8);
  * 32 KiB blocks (the file header sits in block 0) of chunks, each with a 7-byte header
    ``crc32 (uint32 LE), length (uint16 LE), type (uint8)``; type is FULL, or FIRST, MIDDLE...,
    LAST for a record split across blocks; the CRC is zlib's CRC-32 of the type byte followed
    by the payload; a block tail shorter than a chunk header is zero padding.

Example::

    run = read_run(find_runs("outputs")[-1])
    run.config["model"]["d_model"], run.series("train/loss"), run.summary["val/loss"]
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

__all__ = ["RunRecord", "find_runs", "read_run", "read_runs"]

_FILE_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_IDENT, _MAGIC, _VERSION = b":W&B", 0xBEE1, 0
_CHUNK_HEADER = struct.Struct("<IHB")  # crc32, payload length, chunk type
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
# The CRC of each chunk starts from the CRC of its type byte (LevelDB's scheme, zlib's CRC-32).
_TYPE_CRC = {t: zlib.crc32(bytes([t])) for t in (_FULL, _FIRST, _MIDDLE, _LAST)}
RUN_SUFFIXES = (".wandb", ".wandb.gz")  # a run log as wandb writes it, and gzipped (about 1/4 the size)
_INTERNAL_KEY = "_wandb"  # wandb's own bookkeeping, dropped from config and summary
_MISSING = object()


@dataclass
class RunRecord:
    """Everything a run logged, decoded from its ``.wandb`` file."""

    path: Path  # the run-*.wandb file
    run_id: str
    project: str
    name: str  # display name; "" when wandb generated none offline
    group: str
    job_type: str
    tags: list[str]
    config: dict[str, Any]  # nested, JSON-decoded, without wandb's "_wandb" key
    # One dict per committed step, in file order. Keys as logged ("train/loss"), plus wandb's
    # "_step", "_runtime", "_timestamp"; media and nested dicts are reassembled into dicts.
    history: list[dict[str, Any]]
    summary: dict[str, Any]  # final values (wandb's summary, or last history values)
    files: list[str] = field(default_factory=list)  # saved files, relative to files_dir
    exit_code: int | None = None  # None: the run never finished (crashed, or still running)

    @property
    def files_dir(self) -> Path:
        """Where media paths (``row["img"]["path"]``) and ``files`` are relative to."""
        return self.path.parent / "files"

    @property
    def finished(self) -> bool:
        return self.exit_code is not None

    @property
    def started(self) -> float | None:
        """Unix time the run started (its first history row's ``_timestamp - _runtime``); None before any row.
        Unlike the file's modification time it survives copying, so archived runs keep their order."""
        for row in self.history:
            stamp, runtime = row.get("_timestamp"), row.get("_runtime", 0.0)
            if isinstance(stamp, (int, float)) and isinstance(runtime, (int, float)):
                return float(stamp) - float(runtime)
        return None

    def keys(self) -> list[str]:
        """Sorted top-level history keys the user logged (wandb's "_*" keys left out)."""
        # Sorted, not file order: wandb-core writes the items of a row in random (Go map) order.
        return sorted({key for row in self.history for key in row if not key.startswith("_")})

    def series(self, key: str, step_key: str = "_step") -> list[tuple[int, float]]:
        """(step, value) for every history row holding ``key``.

        ``step_key`` picks the x-axis: wandb's ``_step`` by default, or e.g.
        ``"trainer/global_step"`` for Lightning's WandbLogger (which lets wandb count ``_step``
        itself, so train and val metrics of one global step land in different rows).
        A dotted key ("grad.norm") reaches into a nested logged dict.
        """
        out: list[tuple[int, float]] = []
        for row in self.history:
            value, step = _lookup(row, key), _lookup(row, step_key)
            if value is _MISSING or step is _MISSING:
                continue
            if not isinstance(value, (int, float)):  # NaN/inf pass: a diverged loss is still a value
                raise TypeError(f"{self.path}: {key!r} at {step_key}={step} is {type(value).__name__}, "
                                "not a number; read it from .history (media: .media(key))")
            out.append((int(step), value))
        return out

    def media_keys(self) -> list[str]:
        """History keys whose values are W&B media/data types (Image, Histogram, Table...)."""
        return [k for k in self.keys() if any(_is_media(row.get(k)) for row in self.history)]

    def media(self, key: str) -> list[tuple[int, dict[str, Any]]]:
        """(step, media dict) for ``key``; file-backed ones carry "path" under ``files_dir``."""
        return [(int(row["_step"]), row[key]) for row in self.history if _is_media(row.get(key))]


def find_runs(root: str | Path) -> list[Path]:
    """All ``run-*.wandb`` files under ``root`` (recursive), oldest modification first; gzipped ones
    (``run-*.wandb.gz``, as ``archlab report --archive`` keeps them) too. Symlinked directories (wandb's
    ``latest-run``) are not followed, so no run is listed twice."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no such directory: {root}")
    found = [Path(folder) / name for folder, _, names in os.walk(root)  # followlinks=False by default
             for name in names if name.startswith("run-") and name.endswith(RUN_SUFFIXES)]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, str(p)))


def read_runs(root: str | Path, wait_s: float = 0.0) -> list[RunRecord]:
    """``read_run`` on every run under ``root``, oldest first."""
    return [read_run(p, wait_s=wait_s) for p in find_runs(root)]


def read_run(path: str | Path, strict: bool = True, wait_s: float = 0.0) -> RunRecord:
    """Decode one offline run (a ``run-*.wandb`` file, or the run directory holding it).

    Raises ``ValueError`` naming the file if it is not a W&B run log, is corrupt, or is
    truncated mid-record. ``strict=False`` instead stops at the first damaged chunk and
    returns what came before (useful on a run that is still being written).

    ``wait_s`` > 0 re-reads, for up to that many seconds, a log that is empty, cut short or has
    no exit record yet. Use it right after ``run.finish()`` in the same process: finish only
    *informs* wandb-core, which flushes and closes the file a moment later.
    """
    path = _resolve_run_file(Path(path))
    deadline = time.monotonic() + wait_s
    while True:
        try:
            record = _decode(path, strict)
        except _Incomplete:
            if time.monotonic() >= deadline:
                raise
        else:
            if record.finished or time.monotonic() >= deadline:
                return record
        time.sleep(0.05)


class _Incomplete(ValueError):
    """The log ends early: still being written, or cut short."""


def _resolve_run_file(path: Path) -> Path:
    if path.is_dir():
        candidates = sorted(p for p in path.glob("run-*.wandb*") if p.name.endswith(RUN_SUFFIXES))
        if len(candidates) != 1:
            raise ValueError(f"{path}: expected one run-*.wandb file, found {len(candidates)}")
        return candidates[0]
    if not path.is_file():
        raise FileNotFoundError(f"no such W&B run file: {path}")
    return path


def _decode(path: Path, strict: bool) -> RunRecord:
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb  # lazy: importing wandb costs ~0.4 s

    run = RunRecord(path, run_id="", project="", name="", group="", job_type="", tags=[], config={}, history=[],
                    summary={})
    saw_summary, files = False, {}  # files: a dict keeps first-seen order without duplicates
    for offset, payload in _iter_records(path, strict):
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except DecodeError as err:
            if not strict:
                break
            raise ValueError(f"{path}: record at byte {offset} is not a W&B Record: {err}") from err
        kind = record.WhichOneof("record_type")
        if kind == "run":
            _merge_run(run, record.run)
        elif kind == "config":
            _apply(run.config, record.config)
        elif kind == "history":
            run.history.append(_history_row(record.history))
        elif kind == "summary":
            saw_summary = True
            _apply(run.summary, record.summary)
        elif kind == "files":
            files.update((f.path, None) for f in record.files.files)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    if not saw_summary:  # wandb shows the last logged value of each key as the summary
        for row in run.history:
            run.summary.update(copy.deepcopy(row))
    run.config.pop(_INTERNAL_KEY, None)
    run.summary.pop(_INTERNAL_KEY, None)
    run.files = list(files)
    return run


# --- log framing -------------------------------------------------------------------------


def _iter_records(path: Path, strict: bool) -> Iterator[tuple[int, bytes]]:
    """Yield (byte offset, payload) of each whole record in the log."""
    data = path.read_bytes()  # run logs are small next to memory; one read keeps parsing simple
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    _check_file_header(path, data)
    pos, parts, start = _FILE_HEADER.size, [], None
    while pos < len(data):
        block_left = _BLOCK - pos % _BLOCK
        # A block tail too short for a chunk header is padding; an all-zero header is preallocated space.
        if block_left < _CHUNK_HEADER.size or data[pos:pos + _CHUNK_HEADER.size] == bytes(_CHUNK_HEADER.size):
            pos += block_left
            continue
        problem = _chunk_problem(data, pos, block_left, start is None)
        if problem:
            if strict:
                error = _Incomplete if problem.startswith("truncated") else ValueError
                raise error(f"{path}: {problem} at byte {pos}")
            return
        _, length, ctype = _CHUNK_HEADER.unpack_from(data, pos)
        body = pos + _CHUNK_HEADER.size
        if ctype in (_FULL, _FIRST):
            start, parts = pos, []
        parts.append(data[body:body + length])
        if ctype in (_FULL, _LAST):
            yield start, b"".join(parts)
            start = None
        pos = body + length
    if start is not None and strict:
        raise _Incomplete(f"{path}: truncated: file ends inside a record that starts at byte {start}")


def _check_file_header(path: Path, data: bytes) -> None:
    if not data:
        raise _Incomplete(f"{path}: empty file, not yet a W&B run log (was the run flushed?)")
    if len(data) < _FILE_HEADER.size:
        error = _Incomplete if _FILE_HEADER.pack(_IDENT, _MAGIC, _VERSION).startswith(data) else ValueError
        raise error(f"{path}: not a W&B run file (only {len(data)} bytes)")
    ident, magic, version = _FILE_HEADER.unpack_from(data)
    if ident != _IDENT or magic != _MAGIC:
        raise ValueError(f"{path}: not a W&B run file (header {data[:7]!r})")
    if version != _VERSION:
        raise ValueError(f"{path}: unsupported W&B log version {version} (reader knows {_VERSION})")


def _chunk_problem(data: bytes, pos: int, block_left: int, between_records: bool) -> str | None:
    """Why the chunk at ``pos`` cannot be read ("truncated: ..." or "corrupt: ..."), or None."""
    if len(data) - pos < _CHUNK_HEADER.size:
        return "truncated: file ends inside a chunk header"
    crc, length, ctype = _CHUNK_HEADER.unpack_from(data, pos)
    body = pos + _CHUNK_HEADER.size
    if ctype not in _TYPE_CRC:
        return f"corrupt: unknown chunk type {ctype}"
    if body + length > len(data):
        return "truncated: file ends inside a record"
    if length > block_left - _CHUNK_HEADER.size:
        return "corrupt: chunk runs past its 32 KiB block"
    if zlib.crc32(data[body:body + length], _TYPE_CRC[ctype]) != crc:
        return "corrupt: checksum mismatch"
    if (ctype in (_FULL, _FIRST)) != between_records:
        return "corrupt: chunk out of sequence"
    return None


# --- record contents ---------------------------------------------------------------------


def _merge_run(target: RunRecord, run: Any) -> None:
    # A run record can be sent again (e.g. after a rename); later non-empty fields win.
    for name, attr in (("run_id", "run_id"), ("project", "project"), ("name", "display_name"),
                       ("group", "run_group"), ("job_type", "job_type")):
        if getattr(run, attr):
            setattr(target, name, getattr(run, attr))
    if run.tags:
        target.tags = list(run.tags)
    _apply(target.config, run.config)


def _history_row(history: Any) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for item in history.item:
        _assign(row, _item_path(item), _item_value(item))
    # wandb writes "_step" as an item; fall back to the step field (0 is proto3's empty default).
    row.setdefault("_step", history.step.num)
    return row


def _apply(target: dict[str, Any], message: Any) -> None:
    """Apply a config or summary message's ``update`` and ``remove`` items to ``target``."""
    for item in message.update:
        _assign(target, _item_path(item), _item_value(item))
    for item in message.remove:
        _remove(target, _item_path(item))


def _item_path(item: Any) -> list[str]:
    # A top-level key arrives in `key` or as a one-element `nested_key`; a value inside a
    # logged dict (media fields, {"a": {"b": 1}}) arrives as a longer `nested_key`.
    return list(item.nested_key) or [item.key]


def _item_value(item: Any) -> Any:
    # Newer protos give HistoryItem a typed `value` oneof next to `value_json`; wandb-core 0.31
    # still writes value_json, but accept both so a newer writer does not break the reader.
    kind = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    if kind == "none":
        return None
    if kind == "json":
        return json.loads(item.json)
    if kind is not None:
        return getattr(item, kind)
    # json.loads accepts wandb's NaN / Infinity / -Infinity tokens.
    return json.loads(item.value_json) if item.value_json else None


def _assign(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        if not isinstance(target.get(part), dict):
            target[part] = {}
        target = target[part]
    target[path[-1]] = value


def _remove(target: dict[str, Any], path: list[str]) -> None:
    for part in path[:-1]:
        target = target.get(part)
        if not isinstance(target, dict):
            return
    target.pop(path[-1], None)


def _lookup(row: dict[str, Any], key: str) -> Any:
    """``row[key]``, or a dotted key's value inside nested dicts; ``_MISSING`` if absent."""
    if key in row:
        return row[key]
    node: Any = row
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _is_media(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("_type"), str)
