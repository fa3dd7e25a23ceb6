"""Generated tasks with exact answers (copy, reverse, sort, MQAR) as a LightningDataModule."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from ..config_schema import check
from .base import ConfiguredDataModule, TensorDictDataset, parse_ids, render_ids
from .errors import Objective
from .masking import check_mask_rate, masked_splits, synthetic_spec
from .tasks import PAD, SEP, answer_task, mqar

Task = Literal["copy", "reverse", "sort", "mqar"]
TASKS: tuple[str, ...] = ("copy", "reverse", "sort", "mqar")


@dataclass
class SyntheticDataConfig:
    """Every option of ``SyntheticDataModule`` (``data=synthetic``), one line of meaning each."""

    task: Task = "copy"           # copy | reverse | sort: x_1..x_L SEP y_1..y_L; mqar: associative recall (Zoology)
    seq_len: int = 32             # tokens per example (the model's context)
    vocab_size: int = 18          # tokens in the vocabulary, special tokens (PAD 0, SEP 1) included
    length: int = 16              # symbols per input for copy/reverse/sort (needs 2 * length <= seq_len)
    num_kv: int = 4               # key-value pairs per example for mqar (needs 4 * num_kv <= seq_len)
    n_train: int = 20_000         # training examples, generated once
    n_val: int = 1_000            # validation examples, from another stream of the seed
    batch_size: int = 32          # examples per batch, train and val
    num_workers: int = 0          # DataLoader worker processes
    seed: int = 0                 # train and val are streams 2*seed and 2*seed + 1
    mask_rate: float = 0.15       # masked_lm only: share of tokens to predict, in (0, 1); [MASK] = vocab_size - 1
    objective: Objective = "causal_lm"  # set by train() from the model's plugin: the batches it needs
    tokenizer: str | None = None  # must stay null: the task's ids are its tokens (a field so the error is clear)

    def __post_init__(self) -> None:
        check(self.tokenizer is None, "data.tokenizer", f"{self.tokenizer!r}: data=synthetic generates its own token "
              "ids (PAD, SEP, symbols); tokenizers are for text data (data=shakespeare, pycode, text)")
        check(self.objective != "seq2seq", "data.objective",
              "data=synthetic builds single-sequence batches; encoder-decoder models (objective 'seq2seq') "
              "use data=seq2seq (tasks copy, reverse, sort, addition)")
        for name, least in (("seq_len", 2), ("vocab_size", 1), ("length", 1), ("num_kv", 1), ("n_train", 1),
                            ("n_val", 1), ("batch_size", 1), ("num_workers", 0), ("seed", 0)):
            check(getattr(self, name) >= least, f"data.{name}", f"must be >= {least}, got {getattr(self, name)}")
        check_mask_rate(self.mask_rate)
        t, v = self.seq_len, self.vocab_size
        if self.task == "mqar":
            check(4 * self.num_kv <= t, "data.num_kv", f"{self.num_kv} is too large for seq_len {t}: mqar needs "
                  f"4 * num_kv <= seq_len (num_kv <= {t // 4})")
            # Keys come from [1, V/2) and values from [V/2, V), distinct within an example (Zoology's layout;
            # its V > T is a convention of its sweeps, not a need of the task).
            check(v // 2 - 1 >= self.num_kv, "data.vocab_size", f"{v} is too small for mqar with num_kv="
                  f"{self.num_kv}: keys are distinct tokens from [1, vocab_size/2), so it needs vocab_size >= "
                  f"{2 * self.num_kv + 2}")
        else:
            check(2 * self.length <= t, "data.length", f"{self.length} is too large for seq_len {t}: task "
                  f"{self.task!r} needs 2 * length <= seq_len (length <= {t // 2})")
            check(v >= 4, "data.vocab_size", f"{v} is too small for task {self.task!r}: it needs >= 4 "
                  "(PAD, SEP and at least 2 symbols)")
        check(self.batch_size <= self.n_train, "data.batch_size",
              f"{self.batch_size} exceeds data.n_train={self.n_train}; use a smaller batch")


class SyntheticDataModule(ConfiguredDataModule):
    """Synthetic sequence tasks; the loss counts only the answer tokens (options: ``SyntheticDataConfig``).

    "copy" | "reverse" | "sort": ``x_1..x_L SEP y_1..y_L`` then padding (token 0 = PAD, 1 = SEP, symbols
    2..vocab_size-1); "mqar": multi-query associative recall (Zoology). n_train and n_val examples are
    generated once from different streams of ``seed``. masked_lm: [MASK] = vocab_size - 1.
    """

    config_class = SyntheticDataConfig

    def __init__(self, config: SyntheticDataConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        # masked_lm: the last id is [MASK]; the task's tokens stay below it (data/masking.py).
        self.mask_token_id = self.vocab_size - 1 if self.objective == "masked_lm" else None

    def _generate(self, n: int, stream: int) -> TensorDictDataset:
        # Train and val come from different streams of the same seed: seed 2s for train, 2s + 1 for val.
        g = torch.Generator().manual_seed(2 * self.seed + stream)
        v = self.mask_token_id or self.vocab_size  # masked_lm: draw tokens below [MASK]
        if self.task == "mqar":
            ids, labels = mqar(n, self.seq_len, v, self.num_kv, g)
        else:
            ids, labels = answer_task(self.task, n, self.seq_len, v, self.length, g)
        return TensorDictDataset({"input_ids": ids, "labels": labels})

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        train, val = self._generate(self.n_train, 0), self._generate(self.n_val, 1)
        if self.objective == "masked_lm":  # the same sequences (x SEP y), BERT-masked
            spec = synthetic_spec(self.task, self.mask_rate, self.vocab_size)
            return masked_splits(train, val, spec, self.seed)
        return train, val

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Space-separated tokens: '.' for 0 (padding/filler), '|' for SEP (copy/reverse/sort), else the id."""
        return render_ids(ids, PAD, SEP if self.task != "mqar" else None)

    def encode(self, text: str) -> list[int]:
        """Parse ``decode``'s rendering back into ids."""
        return parse_ids(text, PAD, SEP if self.task != "mqar" else None, self.vocab_size)
