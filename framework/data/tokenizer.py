"""Bytes as tokens: no training, no unknown tokens, any text round-trips."""
from __future__ import annotations

from typing import Iterable

import torch

_REPLACEMENT = "\ufffd".encode("utf-8")  # stands in for ids a byte cannot hold (padded vocabularies)


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255."""

    vocab_size: int = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        # A model may sample ids >= 256 when its vocabulary is padded; show them instead of crashing.
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        ids = [int(i) for i in ids]
        try:
            raw = bytes(ids)
        except ValueError:  # some id outside 0..255
            raw = b"".join(bytes([i]) if 0 <= i < 256 else _REPLACEMENT for i in ids)
        return raw.decode("utf-8", errors="replace")
