"""Text to token ids in parallel chunks, with the same ids as encoding the whole text at once."""
from __future__ import annotations

import functools
import re
from collections.abc import Iterator

import numpy as np
import torch
from tokenizers import Tokenizer

# A newline followed by a non-space character: no pre-token of GPT-2-style splitting (the regex of `bpe.py`) spans
# it, so cutting the text there changes no id (a cut inside a whitespace run would).
_SAFE_CUT = re.compile(r"\n(?=\S)")
CHUNK_CHARS = 1 << 16


def text_chunks(text: str, size: int = CHUNK_CHARS) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters, cut only after a newline that a non-space follows."""
    start = 0
    while start < len(text):
        m = _SAFE_CUT.search(text, start + size)
        end = m.end() if m else len(text)
        yield text[start:end]
        start = end


@functools.lru_cache(maxsize=4)  # a sweep rebuilds its datamodule per job: encode each split once
def encode_text(tokenizer_json: str, text: str) -> torch.Tensor:
    """(N,) int32 ids of ``text``; special tokens written in the text are encoded as text, not as specials."""
    tok = Tokenizer.from_str(tokenizer_json)
    tok.encode_special_tokens = True
    encodings = tok.encode_batch_fast(list(text_chunks(text)), add_special_tokens=False)
    ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int32)
    return torch.from_numpy(ids)
