"""Datamodules for the ``causal_lm`` objective.

Every batch is a dict: ``input_ids`` (B, T) long, ``labels`` (B, T) long where labels[b, t] is the
target for position t (already shifted) and -100 is ignored. No module emits ``attention_mask``:
text has no padding, and synthetic padding only follows the answer, so under causal attention no
position that carries a label ever sees it.

``masked_lm`` (the plugin's objective picks it): the same sequences, BERT-masked by ``masking.py``;
batches add ``attention_mask`` and labels hold the original id at masked positions only. [MASK] is
byte 255 for byte-level text (never in UTF-8), the top id of a bpe vocabulary, and ``vocab_size - 1`` for
synthetic tasks. Text's tokenizer (``data.tokenizer``): ``tokenizer.py``, docs/tokenizers.md.
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
