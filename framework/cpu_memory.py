"""Keep freed tensor memory inside the process (glibc malloc), so big CPU tensors stop page-faulting.

PyTorch's CPU allocator calls malloc/free for every tensor. glibc serves large blocks with fresh ``mmap``
pages, or returns the top of its heap to the OS once enough is free (``M_TRIM_THRESHOLD``); either way the
next tensor of that size page-faults on every 4 KiB page it touches. A training step allocates and frees
the same few-MB activations every step, so measured here (``archlab bench moe``, 2-core CPU) a dense MLP's
forward+backward took 4,700 minor page faults and 10 ms of kernel time per step (29.9 ms wall; 25.2 ms
without them), and how many a step took depended on what ran before it: benchmark ratios moved by 10-30%.
Raising both thresholds keeps freed blocks for reuse (what jemalloc/tcmalloc do, which PyTorch's CPU tuning
guide recommends preloading); the price is that resident memory stays at its peak instead of shrinking.
Set ``ARCHLAB_RETAIN_FREED_MEMORY=0`` to keep glibc's defaults.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h> mallopt parameters
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed value: blocks above it still come from mmap
TRIM_THRESHOLD_BYTES = 1 << 30   # return heap top to the OS only when a GiB of it is free

OPT_OUT = "ARCHLAB_RETAIN_FREED_MEMORY"
_applied = False


def retain_freed_memory() -> bool:
    """Apply the thresholds once per process; True when applied (Linux with glibc), False elsewhere or when
    the environment variable ``ARCHLAB_RETAIN_FREED_MEMORY`` is 0."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT, "1").strip() == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and friends have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _applied
