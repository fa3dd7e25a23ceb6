"""Synthetic sequence-to-sequence tasks with exact answers, for encoder-decoder models (objective ``seq2seq``).

Tokens: ``PAD = 0``, ``EOS = 1``, symbols ``2 .. vocab_size-1``. Every example is a source and a
target, both ending in EOS, of varying length (so batches carry real padding):

  copy      x_1..x_L EOS          -> x_1..x_L EOS
  reverse   x_1..x_L EOS          -> x_L..x_1 EOS
  sort      x_1..x_L EOS          -> sorted(x) EOS
  addition  a + b EOS (digits)    -> a+b EOS   (digit d is token 2 + d, '+' is token 12; most significant first)

with L uniform in [min_length, length] (for addition: each operand has 1..length digits).

Batch format (every seq2seq datamodule, also span corruption on text; the model gets every key but ``labels``):
  input_ids              (B, S) long  source, padded with PAD
  attention_mask         (B, S) long  1 = source token, 0 = padding
  decoder_input_ids      (B, T) long  decoder_start_token_id followed by target[:-1] (teacher forcing)
  decoder_attention_mask (B, T) long  1 where the decoder input is real (= labels != -100)
  labels                 (B, T) long  target (ending in EOS), -100 on padding
Padding is on the right; S and T are fixed per datamodule (``source_len``, ``target_len``).
Datamodule attributes: ``pad_token_id`` (0), ``eos_token_id`` (1), ``decoder_start_token_id`` (0,
T5's convention: the decoder starts from PAD; it is never a target), ``source_len``, ``target_len``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from ..config_schema import check
from .base import ConfiguredDataModule, TensorDictDataset, parse_ids, render_ids
from .errors import Objective

PAD, EOS, DECODER_START = 0, 1, 0
FIRST_SYMBOL = 2
PLUS = FIRST_SYMBOL + 10  # addition: digits are tokens 2..11, '+' is 12
IGNORE = -100

Seq2SeqTask = Literal["copy", "reverse", "sort", "addition"]
SEQ2SEQ_TASKS: tuple[str, ...] = ("copy", "reverse", "sort", "addition")


def task_lengths(task: str, length: int) -> tuple[int, int]:
    """(source_len, target_len), EOS included, for ``length`` symbols (or operand digits)."""
    if task == "addition":
        return 2 * length + 2, length + 2  # a + b EOS -> up to length+1 digits EOS
    return length + 1, length + 1


def make_batch(
    sources: list[list[int]], targets: list[list[int]], source_len: int, target_len: int
) -> dict[str, torch.Tensor]:
    """Pad token lists (each already ending in EOS) into the seq2seq batch format above."""
    n = len(sources)
    input_ids = torch.full((n, source_len), PAD, dtype=torch.long)
    labels = torch.full((n, target_len), IGNORE, dtype=torch.long)
    for i, (src, tgt) in enumerate(zip(sources, targets)):
        input_ids[i, : len(src)] = torch.tensor(src)
        labels[i, : len(tgt)] = torch.tensor(tgt)
    return batch_from_padded(input_ids, input_ids != PAD, labels)


def batch_from_padded(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Add the decoder inputs (shift right, start token in front) to (N, S) sources and (N, T) labels."""
    target = labels.masked_fill(labels == IGNORE, PAD)
    decoder_input_ids = torch.cat([torch.full_like(target[:, :1], DECODER_START), target[:, :-1]], dim=1)  # (N, T)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask.long(),
        "decoder_input_ids": decoder_input_ids,
        "decoder_attention_mask": (labels != IGNORE).long(),
        "labels": labels,
    }


def _digits(values: torch.Tensor) -> list[list[int]]:
    return [[FIRST_SYMBOL + int(c) for c in str(int(v))] for v in values]


def generate_task(
    task: str, n: int, vocab_size: int, length: int, min_length: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``n`` examples of ``task`` in the batch format; the ``generator`` alone fixes the data."""
    source_len, target_len = task_lengths(task, length)
    if task == "addition":
        # Operand digit counts uniform in [min_length, length], then values uniform among those counts.
        def operands() -> torch.Tensor:
            n_digits = torch.randint(min_length, length + 1, (n,), generator=generator)
            low = torch.where(n_digits == 1, torch.zeros_like(n_digits), 10 ** (n_digits - 1))
            span = 10**n_digits - low
            return low + (torch.rand(n, generator=generator, dtype=torch.float64) * span).long()

        a, b = operands(), operands()
        sources = [x + [PLUS] + y + [EOS] for x, y in zip(_digits(a), _digits(b))]
        targets = [s + [EOS] for s in _digits(a + b)]
        return make_batch(sources, targets, source_len, target_len)
    lengths = torch.randint(min_length, length + 1, (n,), generator=generator)
    symbols = torch.randint(FIRST_SYMBOL, vocab_size, (n, length), generator=generator)  # (N, L)
    sources, targets = [], []
    for row, k in zip(symbols, lengths.tolist()):
        x = row[:k]
        y = x if task == "copy" else x.flip(0) if task == "reverse" else x.sort().values
        sources.append(x.tolist() + [EOS])
        targets.append(y.tolist() + [EOS])
    return make_batch(sources, targets, source_len, target_len)


@dataclass
class Seq2SeqDataConfig:
    """Every option of ``Seq2SeqDataModule`` (``data=seq2seq``), one line of meaning each."""

    task: Seq2SeqTask = "reverse"  # copy | reverse | sort | addition (see the module docstring)
    vocab_size: int = 18          # tokens, PAD and EOS included (addition needs >= 13: digits 2..11, '+' 12)
    seq_len: int = 16             # the models' longest sequence: must be >= source_len and target_len
    length: int = 8               # most symbols per source (addition: most digits per operand, <= 15)
    min_length: int = 1           # fewest symbols (digits); lengths vary uniformly in [min_length, length]
    n_train: int = 20_000         # training examples, generated once
    n_val: int = 1_000            # validation examples, from another stream of the seed
    batch_size: int = 32          # examples per batch, train and val
    num_workers: int = 0          # DataLoader worker processes
    seed: int = 0                 # train and val are streams 2*seed and 2*seed + 1
    objective: Objective = "seq2seq"  # set by train() from the model's plugin: only seq2seq is built here
    tokenizer: str | None = None  # must stay null: the task's ids are its tokens (a field so the error is clear)

    def __post_init__(self) -> None:
        check(self.tokenizer is None, "data.tokenizer", f"{self.tokenizer!r}: data=seq2seq generates its own token "
              "ids (PAD, EOS, symbols); tokenizers are for text data (data=shakespeare, pycode, text)")
        check(self.objective == "seq2seq", "data.objective",
              f"data=seq2seq builds encoder-decoder batches (objective 'seq2seq'); the model's objective is "
              f"{self.objective!r}: use data=synthetic or a text source instead")
        for name, least in (("vocab_size", 1), ("seq_len", 2), ("length", 1), ("min_length", 1), ("n_train", 1),
                            ("n_val", 1), ("batch_size", 1), ("num_workers", 0), ("seed", 0)):
            check(getattr(self, name) >= least, f"data.{name}", f"must be >= {least}, got {getattr(self, name)}")
        check(self.min_length <= self.length, "data.min_length",
              f"{self.min_length} exceeds data.length={self.length}")
        addition = self.task == "addition"
        needed = PLUS + 1 if addition else FIRST_SYMBOL + 2
        what = "PAD, EOS, 10 digits and '+'" if addition else "PAD, EOS and at least 2 symbols"
        check(self.vocab_size >= needed, "data.vocab_size",
              f"{self.vocab_size} is too small for task {self.task!r}: it needs >= {needed} ({what})")
        check(not addition or self.length <= 15, "data.length",
              f"{self.length}: addition supports at most 15 digits per operand")
        source_len, target_len = task_lengths(self.task, self.length)
        check(self.seq_len >= max(source_len, target_len), "data.seq_len",
              f"{self.seq_len} is too small for task {self.task!r} with length {self.length}: sources have up to "
              f"{source_len} tokens and targets {target_len} (EOS included); use data.seq_len >= "
              f"{max(source_len, target_len)}")
        check(self.batch_size <= self.n_train, "data.batch_size",
              f"{self.batch_size} exceeds data.n_train={self.n_train}; use a smaller batch")


class Seq2SeqDataModule(ConfiguredDataModule):
    """Source -> target pairs with exact answers (tasks and batch format: the module docstring; options:
    ``Seq2SeqDataConfig``). n_train and n_val examples are generated once from different streams of ``seed``."""

    pad_token_id, eos_token_id, decoder_start_token_id = PAD, EOS, DECODER_START
    config_class = Seq2SeqDataConfig

    def __init__(self, config: Seq2SeqDataConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.source_len, self.target_len = task_lengths(self.task, self.length)

    def _generate(self, n: int, stream: int) -> TensorDictDataset:
        g = torch.Generator().manual_seed(2 * self.seed + stream)  # train: stream 0, val: stream 1
        return TensorDictDataset(generate_task(self.task, n, self.vocab_size, self.length, self.min_length, g))

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        return self._generate(self.n_train, 0), self._generate(self.n_val, 1)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """addition: '12+34|' style ('|' = EOS, padding dropped); other tasks: space-separated ids with
        '.' for PAD and '|' for EOS."""
        if self.task != "addition":
            return render_ids(ids, PAD, EOS)
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        names = {EOS: "|", PLUS: "+", **{FIRST_SYMBOL + d: str(d) for d in range(10)}}
        return "".join(names.get(int(i), "?") for i in ids if i != PAD)

    def encode(self, text: str) -> list[int]:
        """Parse ``decode``'s rendering back into ids (no EOS is added)."""
        if self.task == "addition":
            table = {"|": EOS, "+": PLUS, **{str(d): FIRST_SYMBOL + d for d in range(10)}}
            bad = [c for c in text if c not in table and not c.isspace()]
            if bad:
                raise ValueError(f"cannot encode {bad[0]!r}: addition uses digits, '+' and '|'")
            return [table[c] for c in text if not c.isspace()]
        return parse_ids(text, PAD, EOS, self.vocab_size)
