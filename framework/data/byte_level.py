"""The byte alphabet of byte-level BPE (GPT-2's): each of the 256 bytes is one printable character, so every
token string of such a vocabulary maps back to exact bytes.

Bytes that are printable and not whitespace in Latin-1 (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) stand for
themselves; the other 68 (controls, space, NBSP, soft hyphen) take the code points 256, 257, ... in byte order
(space is ``Ġ``, newline ``Ċ``). ``tokenizers``' ``ByteLevel`` pre-tokenizer and decoder use this alphabet.
"""
from __future__ import annotations

import functools

_SELF = (range(0x21, 0x7F), range(0xA1, 0xAD), range(0xAE, 0x100))  # bytes shown as their own character


@functools.lru_cache(maxsize=1)
def byte_to_char() -> dict[int, str]:
    """byte value -> its character in the alphabet."""
    kept = {b for r in _SELF for b in r}
    table: dict[int, str] = {}
    shifted = 0
    for b in range(256):
        if b in kept:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


@functools.lru_cache(maxsize=1)
def char_to_byte() -> dict[str, int]:
    """The inverse of ``byte_to_char``."""
    return {c: b for b, c in byte_to_char().items()}


def token_to_bytes(token: str) -> bytes:
    """The raw bytes a byte-level vocabulary entry stands for; a character outside the alphabet (not expected in
    a byte-level vocabulary) counts as its own UTF-8 bytes."""
    table = char_to_byte()
    out = bytearray()
    for c in token:
        b = table.get(c)
        out.extend(c.encode("utf-8") if b is None else bytes([b]))
    return bytes(out)
