"""Peak tensor memory of a piece of code, on any device: the high-water mark of the bytes held by tensor storages the
code allocated (activations saved for backward, temporaries, gradients), counted as each aten op returns.

It is what ``torch.cuda.max_memory_allocated`` reports on CUDA, minus the caching allocator's rounding, measured the
same way on CPU, where no allocator keeps such a mark, and in-process: no fresh subprocess per measurement, and no
resident-set noise from malloc keeping freed pages. Not counted: storages that existed before (parameters, inputs)
and scratch buffers a fused kernel allocates and frees inside one op (e.g. flash attention's per-thread blocks).
Every op passes through Python while it runs, so time the code without it.

    with PeakTensorMemory() as memory:
        loss(model, batch).backward()
    print(memory.peak_bytes)
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakTensorMemory(TorchDispatchMode):
    """Counts each new storage's bytes while it lives; ``peak_bytes`` is the most held at once."""

    def __init__(self) -> None:
        super().__init__()
        self.current_bytes = 0
        self.peak_bytes = 0
        self._live: dict[int, weakref.ref] = {}  # storage id -> weak reference (its callback frees the bytes)

    def __enter__(self) -> PeakTensorMemory:
        super().__enter__()
        return self

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._live:
            return
        size = storage.nbytes()

        def freed(_ref: weakref.ref, key: int = key, size: int = size) -> None:
            if self._live.pop(key, None) is not None:
                self.current_bytes -= size

        self._live[key] = weakref.ref(storage, freed)
        self.current_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            # In-place ops and views return storages the op was given: nothing new was allocated.
            if isinstance(t, torch.Tensor) and t.device.type != "meta" and id(t.untyped_storage()) not in inputs:
                self._track(t)
        return out
