"""The decode state of the conv-then-recurrence token mixers (mamba, mamba2, rglru, gated_deltanet,
linear_attention): the last conv inputs and the recurrence's tensor, both fixed-size after the first step."""
from __future__ import annotations

import torch


class ConvScanState:
    """``conv`` (b, channels, taps - 1): the inputs the causal conv still needs (None: zeros, a sequence start), and
    the recurrence's tensor under the name ``STATE`` (each mixer keeps the name its maths uses: ``ssm``, ``h``, ``s``).
    Layers replace these tensors, never modify them, so a shallow copy of a state is a snapshot."""

    STATE = "state"

    def __init__(self) -> None:
        self.conv: torch.Tensor | None = None
        setattr(self, self.STATE, None)

    def _tensors(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.conv, getattr(self, self.STATE)

    def detach(self) -> "ConvScanState":
        out = type(self)()
        conv, value = self._tensors()
        out.conv = None if conv is None else conv.detach()
        setattr(out, self.STATE, None if value is None else value.detach())
        return out

    @property
    def batch_size(self) -> int | None:
        value = getattr(self, self.STATE)
        return None if value is None else value.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes held (the same after 5 or 5000 generated tokens)."""
        return sum(t.numel() * t.element_size() for t in self._tensors() if t is not None)
