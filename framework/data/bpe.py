"""Train a byte-level BPE on a corpus's training text once, cached on disk by a hash of everything it depends on.

``cached_bpe`` is what datamodules call: the same text and settings always give the same ``tokenizer.json``
(byte for byte), so a sweep trains it once and every later run, ``archlab eval`` included, reads it back.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .encode import text_chunks

FORMAT = 1  # bump when the recipe below changes: old cache entries are then never read
MIN_FREQUENCY = 2  # a merge must occur at least twice (tiny corpora would otherwise merge whole lines)
BYTE_ALPHABET = 256


def bpe_key(text: str, vocab_size: int, special_tokens: tuple[str, ...]) -> str:
    """Hex digest naming one tokenizer: the training text, the settings, the recipe and the library version
    (another ``tokenizers`` release may merge differently)."""
    settings = {"format": FORMAT, "tokenizers": tokenizers.__version__, "vocab_size": vocab_size,
                "special_tokens": list(special_tokens), "min_frequency": MIN_FREQUENCY}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update(text.encode("utf-8"))
    return h.hexdigest()


def train_bpe(text: str, vocab_size: int, special_tokens: tuple[str, ...] = ()) -> Tokenizer:
    """A byte-level BPE of ``vocab_size`` ids trained on ``text``: the 256 byte tokens (ids 0..255, in the order
    of their alphabet characters), then the merges, then ``special_tokens`` at the top. A corpus with too few
    distinct pairs stops early, with a smaller vocabulary."""
    tok = Tokenizer(models.BPE())
    # No regex-free shortcut: GPT-2's split keeps merges inside words, numbers and punctuation runs.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(special_tokens), min_frequency=MIN_FREQUENCY,
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[])
    tok.train_from_iterator(text_chunks(text), trainer=trainer)
    if special_tokens:
        tok.add_special_tokens(list(special_tokens))
    return tok


def cached_bpe(text: str, vocab_size: int, special_tokens: tuple[str, ...], cache_dir: str | Path) -> Path:
    """The path of the ``tokenizer.json`` trained on ``text`` with these settings, trained and written now only
    if ``cache_dir`` does not hold it yet (written to a temporary file, then renamed: parallel jobs of a sweep
    never read half a file)."""
    path = Path(cache_dir) / f"bpe-{bpe_key(text, vocab_size, special_tokens)[:20]}" / "tokenizer.json"
    if path.is_file():
        return path
    content = train_bpe(text, vocab_size, special_tokens).to_str(pretty=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(content)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep a shared cache from other users
    os.replace(tmp, path)
    return path
