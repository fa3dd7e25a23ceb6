"""Text in and out of ``archlab generate`` for encoder-decoder checkpoints.

A model with a vocabulary of its own offers ``PromptCodec``'s two methods; every other model gets
``ByteSentinelCodec``, the token format of the built-in seq2seq data: UTF-8 bytes as ids 0..255, and
above them the span-corruption sentinels of ``framework/data/span_corruption.py`` (sentinel ``i`` is
``vocab_size - 1 - i``), shown as ``<S0>``, ``<S1>``, ...
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

BYTE_VOCAB = 256


@runtime_checkable
class PromptCodec(Protocol):
    """Optional model methods: the source ids for a prompt, and the text for generated ids (EOS and what
    follows already cut off)."""

    def encode_prompt(self, prompt: str) -> list[int]: ...

    def decode_target(self, ids: list[int]) -> str: ...


class ByteSentinelCodec:
    """UTF-8 bytes, with ids >= 256 shown as span-corruption sentinels."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def encode_prompt(self, prompt: str) -> list[int]:
        return list(prompt.encode("utf-8"))

    def decode_target(self, ids: list[int]) -> str:
        parts: list[str] = []
        run: list[int] = []  # bytes since the last sentinel
        for t in ids + [-1]:
            if 0 <= t < BYTE_VOCAB:
                run.append(t)
                continue
            parts.append(bytes(run).decode("utf-8", errors="replace"))
            run = []
            if t >= BYTE_VOCAB:
                parts.append(f"<S{self.vocab_size - 1 - t}>")
        return "".join(parts)
