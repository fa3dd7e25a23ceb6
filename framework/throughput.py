"""Training throughput measured over a window of steps, without a host-device sync per step."""
from __future__ import annotations

import time

import torch


def batch_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor | int:
    """Tokens a training batch carries: the attention mask's ones (a device tensor, not synced) or the
    ``input_ids`` shape (a host integer)."""
    if "attention_mask" in batch:
        return batch["attention_mask"].sum()
    return batch["input_ids"].numel()


class TokenRate:
    """Tokens/s from the start of the window's first batch to the start of the batch after its last one.

    Per-step timings would be skewed by whichever step pays for the logging; a window of steps between two
    logging points averages over all of them, as a wall clock around the whole run does.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start over (e.g. after a validation, whose time is not training time)."""
        self.start: float | None = None
        self.tokens: torch.Tensor | int = 0

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        """Count a training batch at its start; the first one opens the window."""
        if self.start is None:
            self.start = time.perf_counter()
        self.tokens = self.tokens + batch_tokens(batch)

    def lap(self, device: torch.device) -> float | None:
        """Tokens/s of the batches added since the window opened, then a fresh window; None if none was open.
        Waits for queued device work first, so the window ends where its work ends."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        start, tokens = self.start, self.tokens
        self.reset()
        if start is None or now <= start:
            return None
        return float(tokens) / (now - start)
