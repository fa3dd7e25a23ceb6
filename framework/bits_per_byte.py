"""``val/bpb``: bits per byte of raw text, the one axis on which byte-level and BPE runs (and every architecture)
compare. The sum of the scored tokens' losses in bits over the number of UTF-8 bytes those target tokens decode
to (the datamodule's ``token_bytes`` lookup, vocab id -> bytes): for bytes it is the loss / ln 2."""
from __future__ import annotations

import math

import torch
from torchmetrics import Metric


class BitsPerByte(Metric):
    """Running sums of bits and bytes over the validation batches; ``compute()`` is their ratio."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("bits", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("bytes", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, nll_sum: torch.Tensor, scored_labels: torch.Tensor, token_bytes: torch.Tensor) -> None:
        """``nll_sum``: the summed loss in nats of the tokens ``scored_labels`` (N,); ``token_bytes``: (V,)."""
        self.bits += nll_sum.detach().to(torch.float64) / math.log(2)
        self.bytes += token_bytes[scored_labels].sum().to(torch.float64)

    def compute(self) -> torch.Tensor:
        return self.bits / self.bytes.clamp(min=1)
