"""From a text corpus's bytes and ``data.tokenizer`` to the tokenizer and the token ids of both splits.

Bytes keep the corpus tensor as it is (uint8, ids = bytes). ``bpe`` trains on the training split only (the
validation text never shapes a merge), cached by ``framework/data/bpe.py``; a ``tokenizer.json`` path is read
as it is. Either way the splits are cut at the same byte offset as for bytes (moved back to the start of a
UTF-8 character), so every tokenizer validates on the same text.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .bpe import BYTE_ALPHABET, cached_bpe
from .errors import DataConfigError
from .tokenizer import MASK_TOKENS, ByteTokenizer, HFTokenizer, TextTokenizer, read_tokenizer_file

KINDS = ("bytes", "bpe")  # besides a path to a tokenizer.json
BPE_MASK = "[MASK]"  # masked_lm with bpe: added above the trained vocabulary


def default_tokenizer_dir() -> Path:
    """Where bpe tokenizers are cached when ``data.tokenizer_dir`` is null: beside the runs, under the outputs
    root of ``conf/paths`` (``$ARCHLAB_ROOT``, else the working directory)."""
    return Path(os.environ.get("ARCHLAB_ROOT", ".")) / "outputs" / "tokenizers"


def bpe_special_tokens(objective: str) -> tuple[str, ...]:
    """Ids a bpe vocabulary reserves at its top for the objective: [MASK] for masked_lm, none otherwise."""
    return (BPE_MASK,) if objective == "masked_lm" else ()


def char_boundary(raw: bytes, i: int) -> int:
    """``i`` moved back to the first byte of the UTF-8 character it falls in."""
    while 0 < i < len(raw) and raw[i] & 0xC0 == 0x80:  # 10xxxxxx: a continuation byte
        i -= 1
    return i


def tokenize_splits(config: Any, data: torch.Tensor, n_train: int) -> tuple[TextTokenizer, torch.Tensor, torch.Tensor]:
    """(tokenizer, train ids, val ids) for ``config`` (a TextDataConfig) on the corpus ``data`` (uint8) whose
    first ``n_train`` bytes are the training split."""
    if config.tokenizer == "bytes":
        return ByteTokenizer(), data[:n_train], data[n_train:]
    raw = data.numpy().tobytes()
    n_train = char_boundary(raw, n_train)
    # A max_bytes cut may end inside a character: that partial character is dropped.
    train_text, val_text = raw[:n_train].decode("utf-8", "ignore"), raw[n_train:].decode("utf-8", "ignore")
    if config.tokenizer == "bpe":
        cache = Path(config.tokenizer_dir) if config.tokenizer_dir else default_tokenizer_dir()
        path = cached_bpe(train_text, config.vocab_size, bpe_special_tokens(config.objective), cache)
        tokenizer = HFTokenizer(path.read_text(encoding="utf-8"), "bpe")
    else:
        tokenizer = read_tokenizer_file(config.tokenizer)
        if tokenizer.vocab_size > config.vocab_size:
            raise DataConfigError(f"data.vocab_size: {config.vocab_size} is smaller than the {tokenizer.vocab_size} ids "
                                  f"of data.tokenizer={config.tokenizer}; set data.vocab_size={tokenizer.vocab_size}")
    return tokenizer, tokenizer.encode_corpus(train_text), tokenizer.encode_corpus(val_text)


def mask_id_and_range(tokenizer: TextTokenizer, mask_byte: int) -> tuple[int, tuple[int, int]]:
    """masked_lm: the [MASK] id and the [low, high) range of the random replacements. Bytes: byte ``mask_byte``
    (never in UTF-8) and the bytes below it; bpe: [MASK] at the top and everything below; a tokenizer.json:
    its [MASK] or <mask> token and its whole vocabulary."""
    if isinstance(tokenizer, ByteTokenizer):
        return mask_byte, (0, mask_byte)
    mask = next((i for i in map(tokenizer.token_to_id, MASK_TOKENS) if i is not None), None)
    if mask is None:
        raise DataConfigError(f"data.tokenizer: masked_lm needs a mask token ({' or '.join(MASK_TOKENS)}), which "
                              f"{tokenizer.source} does not have")
    return mask, (0, mask if tokenizer.kind == "bpe" else tokenizer.vocab_size)


def check_tokenizer_option(config: Any) -> None:
    """``data.tokenizer`` (made absolute when a path) and what it needs of ``data.vocab_size`` and the objective."""
    kind = config.tokenizer
    if not isinstance(kind, str) or not kind:
        raise DataConfigError(f"data.tokenizer: must be bytes, bpe or the path of a tokenizer.json, got {kind!r}")
    if kind not in KINDS:
        from hydra.utils import to_absolute_path  # Hydra may change the working directory; paths stay the user's

        config.tokenizer = to_absolute_path(kind)
        if not Path(config.tokenizer).is_file():
            raise DataConfigError(f"data.tokenizer: {kind!r} is not bytes, bpe or an existing tokenizer.json file")
    if kind != "bytes" and config.objective == "seq2seq":
        raise DataConfigError("data.tokenizer: T5 span corruption on text works on bytes (PAD and EOS are bytes 0 "
                              "and 1, sentinels sit above 256); use data.tokenizer=bytes")
    if kind == "bpe":
        least = BYTE_ALPHABET + len(bpe_special_tokens(config.objective)) + 1
        if config.vocab_size < least:
            raise DataConfigError(f"data.vocab_size: {config.vocab_size} leaves no merge for data.tokenizer=bpe (256 "
                                  f"byte tokens{' + [MASK]' if least > 257 else ''}); use data.vocab_size >= {least}, "
                                  "e.g. 2048 or 8192")
