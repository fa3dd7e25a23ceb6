"""Datamodules for the ``causal_lm`` objective.

Every batch is a dict: ``input_ids`` (B, T) long, ``labels`` (B, T) long where labels[b, t] is the
target for position t (already shifted) and -100 is ignored. No module emits ``attention_mask``:
text has no padding, and synthetic padding only follows the answer, so under causal attention no
position that carries a label ever sees it.
"""
from .build import build_datamodule
from .errors import DataConfigError
from .synthetic import TASKS, SyntheticDataModule
from .text import SOURCES, TextDataModule
from .tokenizer import ByteTokenizer

__all__ = [
    "ByteTokenizer",
    "build_datamodule",
    "DataConfigError",
    "SOURCES",
    "SyntheticDataModule",
    "TASKS",
    "TextDataModule",
]
