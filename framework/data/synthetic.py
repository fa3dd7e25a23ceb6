"""Generated tasks with exact answers (copy, reverse, sort, MQAR) as a LightningDataModule."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import OBJECTIVES, DataConfigError, check_choice, check_int
from .loaders import eval_loader, train_loader
from .masking import check_mask_rate, masked_splits, synthetic_spec
from .tasks import PAD, SEP, answer_task, mqar

Task = Literal["copy", "reverse", "sort", "mqar"]
TASKS: tuple[str, ...] = ("copy", "reverse", "sort", "mqar")


class ExampleDataset(Dataset):
    """Rows of precomputed ``input_ids`` and ``labels``, both (N, T)."""

    def __init__(self, input_ids: torch.Tensor, labels: torch.Tensor) -> None:
        self.input_ids, self.labels = input_ids, labels

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}


class SyntheticDataModule(pl.LightningDataModule):
    """Synthetic sequence tasks; the loss counts only the answer tokens.

    task:       "copy" | "reverse" | "sort": ``x_1..x_L SEP y_1..y_L`` then padding (token 0 = PAD,
                1 = SEP, symbols 2..vocab_size-1); "mqar": multi-query associative recall (Zoology).
    seq_len:    tokens per example (the model's context).
    vocab_size: tokens in the vocabulary, special tokens included.
    length:     symbols per input for copy/reverse/sort (needs 2 * length <= seq_len); unused by mqar.
    num_kv:     key-value pairs per example for mqar (needs 4 * num_kv <= seq_len); unused otherwise.
    n_train, n_val: examples per split, generated once from different streams of ``seed``.
    mask_rate:  masked_lm only: share of tokens chosen for prediction, in (0, 1); [MASK] = vocab_size - 1.
    """


    def __init__(
        self,
        task: Task = "copy",
        seq_len: int = 32,
        vocab_size: int = 18,
        length: int = 16,
        num_kv: int = 4,
        n_train: int = 20_000,
        n_val: int = 1_000,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        mask_rate: float = 0.15,
        objective: str = "causal_lm",
    ) -> None:
        super().__init__()
        # Set by train() from the model's plugin; each objective shapes the batches differently.
        self.objective = check_choice("objective", objective, OBJECTIVES)
        if self.objective == "seq2seq":  # source/target pairs: framework/data/seq2seq.py
            raise DataConfigError(
                "data=synthetic builds single-sequence batches; encoder-decoder models (objective 'seq2seq') "
                "use data=seq2seq (tasks copy, reverse, sort, addition)"
            )
        self.task = check_choice("task", task, TASKS)
        self.seq_len = check_int("seq_len", seq_len, 2)
        self.vocab_size = check_int("vocab_size", vocab_size, 1)
        self.length = check_int("length", length, 1)
        self.num_kv = check_int("num_kv", num_kv, 1)
        self.n_train = check_int("n_train", n_train, 1)
        self.n_val = check_int("n_val", n_val, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.seed = check_int("seed", seed, 0)
        self.mask_rate = check_mask_rate(mask_rate)
        # masked_lm: the last id is [MASK]; the task's tokens stay below it (data/masking.py).
        self.mask_token_id = self.vocab_size - 1 if self.objective == "masked_lm" else None
        self._check_task_fits()
        if self.batch_size > self.n_train:
            raise DataConfigError(f"data.batch_size={batch_size} exceeds data.n_train={n_train}; use a smaller batch")
        self.train_dataset: ExampleDataset | None = None
        self.val_dataset: ExampleDataset | None = None

    def _check_task_fits(self) -> None:
        t, v = self.seq_len, self.vocab_size
        if self.task == "mqar":
            if 4 * self.num_kv > t:
                raise DataConfigError(
                    f"data.num_kv={self.num_kv} is too large for seq_len {t}: mqar needs 4 * num_kv <= seq_len "
                    f"(num_kv <= {t // 4})"
                )
            if v <= t:
                raise DataConfigError(
                    f"data.vocab_size={v} is too small for mqar: it needs vocab_size > seq_len ({t})"
                )
        else:
            if 2 * self.length > t:
                raise DataConfigError(
                    f"data.length={self.length} is too large for seq_len {t}: task {self.task!r} needs "
                    f"2 * length <= seq_len (length <= {t // 2})"
                )
            if v < 4:
                raise DataConfigError(
                    f"data.vocab_size={v} is too small for task {self.task!r}: it needs >= 4 "
                    "(PAD, SEP and at least 2 symbols)"
                )

    def _generate(self, n: int, stream: int) -> ExampleDataset:
        # Train and val come from different streams of the same seed: seed 2s for train, 2s + 1 for val.
        g = torch.Generator().manual_seed(2 * self.seed + stream)
        v = self.mask_token_id or self.vocab_size  # masked_lm: draw tokens below [MASK]
        if self.task == "mqar":
            ids, labels = mqar(n, self.seq_len, v, self.num_kv, g)
        else:
            ids, labels = answer_task(self.task, n, self.seq_len, v, self.length, g)
        return ExampleDataset(ids, labels)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is None:
            self.train_dataset = self._generate(self.n_train, 0)
            self.val_dataset = self._generate(self.n_val, 1)
            if self.objective == "masked_lm":  # the same sequences (x SEP y), BERT-masked
                spec = synthetic_spec(self.task, self.mask_rate, self.vocab_size)
                self.train_dataset, self.val_dataset = masked_splits(self.train_dataset, self.val_dataset, spec, self.seed)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return train_loader(self.train_dataset, self.batch_size, self.num_workers, self.seed)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return eval_loader(self.val_dataset, self.batch_size, self.num_workers)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Space-separated tokens: '.' for 0 (padding/filler), '|' for SEP (copy/reverse/sort), else the id."""
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        sep = SEP if self.task != "mqar" else None
        return " ".join("." if i == PAD else "|" if i == sep else str(int(i)) for i in ids)

    def encode(self, text: str) -> list[int]:
        """Parse ``decode``'s rendering back into ids."""
        out = []
        for tok in text.split():
            if tok == ".":
                out.append(PAD)
            elif tok == "|" and self.task != "mqar":
                out.append(SEP)
            elif tok.isdigit() and int(tok) < self.vocab_size:
                out.append(int(tok))
            else:
                raise ValueError(f"cannot encode {tok!r}: expected '.', '|' or an id below {self.vocab_size}")
        return out
