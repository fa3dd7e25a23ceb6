"""The decode state of a whole stack: each layer's own (KV cache, recurrent state) and the positions seen."""
from __future__ import annotations

from typing import Any


class StackState:
    """``layers[i]`` is what layer i's token mixer returned from ``new_state()``; ``length`` counts positions."""

    def __init__(self, layers: list[Any]) -> None:
        self.layers = layers
        self.length = 0

    def reserve(self, positions: int) -> None:
        """Size every layer's cache that can preallocate (KVCache) for ``positions`` in total."""
        for layer in self.layers:
            if hasattr(layer, "reserve"):
                layer.reserve(positions)

    def detached(self) -> "StackState":
        """A copy cut from the autograd graph (truncated BPTT carries only recurrent states)."""
        out = StackState([s.detach() for s in self.layers])
        out.length = self.length
        return out

    @property
    def batch_size(self) -> int | None:
        sizes = {getattr(s, "batch_size", None) for s in self.layers} - {None}
        return sizes.pop() if sizes else None
