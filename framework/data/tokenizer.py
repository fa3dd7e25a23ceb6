"""Tokenizers of text data, and their form in a checkpoint.

``data.tokenizer`` is ``bytes`` (UTF-8 bytes as ids 0..255: no training, any text round-trips), ``bpe`` (a
byte-level BPE trained on the training split, ``framework/data/bpe.py``) or the path of a byte-level
``tokenizer.json``. A checkpoint records it as ``hparams["tokenizer"]`` (``tokenizer_hparams``):
``{"kind": "bytes"}`` or ``{"kind": "bpe" | "file", "tokenizer_json": <the file's text>, ...}``; None for data
without text (synthetic tasks). ``tokenizer_from_hparams`` rebuilds it (bytes for checkpoints older than this
record), ``save_hf_files`` writes it as Hugging Face tokenizer files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import torch
from tokenizers import Tokenizer

from ..config_schema import ConfigError
from .byte_level import byte_to_char, token_to_bytes
from .encode import encode_text
from .errors import DataConfigError

_REPLACEMENT = "\ufffd".encode("utf-8")  # stands in for ids a byte cannot hold (padded vocabularies)
MASK_TOKENS = ("[MASK]", "<mask>")  # what a masked-LM run takes as [MASK] in a tokenizer.json (BERT, RoBERTa)


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255."""

    kind = "bytes"
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

    def token_bytes(self, size: int) -> torch.Tensor:
        """(size,) long: bytes each id decodes to (1 per byte id, 0 for padded ids), for bits per byte."""
        table = torch.zeros(size, dtype=torch.long)
        table[: min(size, 256)] = 1
        return table

    def hparams(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def to_json(self) -> str:
        """The same tokenizer as a Hugging Face ``tokenizer.json``: byte-level BPE whose vocabulary is the 256
        bytes at their own ids and no merge, so it encodes any text to exactly its UTF-8 bytes."""
        from tokenizers import decoders, models, pre_tokenizers

        tok = Tokenizer(models.BPE(vocab={c: b for b, c in byte_to_char().items()}, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tok.decoder = decoders.ByteLevel()
        return tok.to_str(pretty=True)


class HFTokenizer:
    """A byte-level ``tokenizers.Tokenizer``: ``kind`` "bpe" (trained by archlab) or "file" (the user's)."""

    def __init__(self, tokenizer_json: str, kind: str, source: str | None = None) -> None:
        self.kind, self.source, self.json = kind, source, tokenizer_json
        self._tok = Tokenizer.from_str(tokenizer_json)
        self._tok.encode_special_tokens = True  # "[MASK]" written in a prompt is text, not the mask id
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self._added = self._tok.get_added_tokens_decoder()  # id -> AddedToken

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_corpus(self, text: str) -> torch.Tensor:
        """(N,) int32 ids of a whole corpus split (parallel, cached for sweeps)."""
        return encode_text(self.json, text)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        parts, run = [], []
        for i in [int(i) for i in ids] + [None]:  # ids of a padded vocabulary show as U+FFFD, as for bytes
            if i is not None and 0 <= i < self.vocab_size:
                run.append(i)
                continue
            parts.append(self._tok.decode(run, skip_special_tokens=False) if run else "")
            run = []
            if i is not None:
                parts.append("\ufffd")
        return "".join(parts)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def token_bytes(self, size: int) -> torch.Tensor:
        """(size,) long: the exact number of bytes each id decodes to: a vocabulary entry's characters mapped
        back through the byte alphabet (not ``decode([id])``: a token holding part of a UTF-8 character
        decodes to U+FFFD), an added token its UTF-8 length, a special token or a padded id 0."""
        table = torch.zeros(size, dtype=torch.long)
        for token, i in self._tok.get_vocab(with_added_tokens=False).items():
            if i < size and i not in self._added:
                table[i] = len(token_to_bytes(token))
        for i, added in self._added.items():
            if i < size:
                table[i] = 0 if added.special else len(added.content.encode("utf-8"))
        return table

    def hparams(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "tokenizer_json": self.json, "vocab_size": self.vocab_size}
        if self.source is not None:
            out["source"] = self.source
        return out

    def to_json(self) -> str:
        return self.json


TextTokenizer = ByteTokenizer | HFTokenizer


def read_tokenizer_file(path: str) -> HFTokenizer:
    """A user's ``tokenizer.json``: readable by ``tokenizers`` and byte-level (so every text round-trips and bits
    per byte are exact), or a ConfigError naming data.tokenizer."""
    p = Path(path)
    if not p.is_file():
        raise DataConfigError(f"data.tokenizer: {path!r} is not bytes, bpe or an existing tokenizer.json file")
    text = p.read_text(encoding="utf-8")
    try:
        tok = HFTokenizer(text, "file", source=str(p))
    except Exception as err:  # noqa: BLE001 - the library's parse errors are many
        raise DataConfigError(f"data.tokenizer: {path} is not a tokenizer.json the tokenizers library reads "
                          f"({str(err).splitlines()[0][:200]})") from None
    decoder = json.loads(text).get("decoder") or {}
    parts = decoder.get("decoders", []) if decoder.get("type") == "Sequence" else [decoder]
    if not parts or any(d.get("type") != "ByteLevel" for d in parts):
        raise DataConfigError(f"data.tokenizer: {path} is not a byte-level tokenizer (its decoder is "
                          f"{decoder.get('type')!r}, not ByteLevel); archlab needs text to round-trip byte for byte")
    return tok


def tokenizer_hparams(datamodule: Any) -> dict[str, Any] | None:
    """What a checkpoint records of ``datamodule``'s tokenizer (None: its data has no text tokenizer)."""
    tok = getattr(datamodule, "tokenizer", None)
    return tok.hparams() if tok is not None and hasattr(tok, "hparams") else None


def tokenizer_from_hparams(hparams: dict[str, Any]) -> TextTokenizer:
    """The tokenizer a checkpoint was trained with, from its hyper-parameters (``load_checkpoint(path)[1]``); a
    checkpoint without the record (older archlab, synthetic data) gets bytes, as ``archlab generate`` always did."""
    record = hparams.get("tokenizer") or {"kind": "bytes"}
    if record["kind"] == "bytes":
        return ByteTokenizer()
    return HFTokenizer(record["tokenizer_json"], record["kind"], record.get("source"))


def _describe(record: dict[str, Any] | None) -> str:
    record = record or {"kind": "bytes"}
    if record["kind"] == "bytes":
        return "bytes"
    size = record.get("vocab_size")
    return f"{record['kind']} ({size} tokens)" + (f" from {record['source']}" if record.get("source") else "")


def check_checkpoint_tokenizer(hparams: dict[str, Any], datamodule: Any, what: str) -> None:
    """A checkpoint (``what``: how to name it) must meet data tokenized as it was trained: same kind, same
    tokenizer.json; else a one-line ConfigError naming data.tokenizer. Data without a text tokenizer (synthetic
    tasks) has nothing to compare."""
    now = tokenizer_hparams(datamodule)
    if now is None:
        return
    saved = hparams.get("tokenizer") or {"kind": "bytes"}  # checkpoints older than the record: bytes
    same = saved["kind"] == now["kind"] and saved.get("tokenizer_json") == now.get("tokenizer_json")
    if not same:
        hint = (f"data.tokenizer={saved['kind']}" if saved["kind"] != "file" else
                "data.tokenizer=<its tokenizer.json> (framework.data.tokenizer.save_hf_files writes it)")
        if saved["kind"] == now["kind"] == "bpe":
            hint = "the same data and data.vocab_size, or data.tokenizer=<its tokenizer.json> (save_hf_files writes it)"
        raise ConfigError(f"data.tokenizer: {what} was trained with tokenizer {_describe(saved)}, this data config "
                          f"gives {_describe(now)}; use {hint}")


def save_hf_files(tokenizer: TextTokenizer, directory: str | Path) -> list[Path]:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (``PreTrainedTokenizerFast``, the mask token if
    any) into ``directory``, for ``transformers.AutoTokenizer.from_pretrained``; returns the paths. Byte
    tokenizers are written as their exact byte-level BPE equivalent (``ByteTokenizer.to_json``)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    if isinstance(tokenizer, HFTokenizer):
        mask = next((t for t in MASK_TOKENS if tokenizer.token_to_id(t) is not None), None)
        if mask is not None:
            config["mask_token"] = mask
    paths = [out / "tokenizer.json", out / "tokenizer_config.json"]
    paths[0].write_text(tokenizer.to_json(), encoding="utf-8")
    paths[1].write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return paths
