"""The BERT masked-LM recipe as a dataset transform: choose ~rate of the eligible tokens of each
sequence; replace 80% of them by [MASK], 10% by a random regular token, keep 10% unchanged; labels
hold the original id at chosen positions and -100 everywhere else.

As in BERT's own data pipeline (``create_pretraining_data.py``), each sequence gets exactly
``max(1, round(rate * n_eligible))`` predictions rather than a Bernoulli draw per token, so a short
sequence always has something to predict. Padding and special tokens are never chosen.

Special ids, decided per data source (``masked_lm_vocab``):
    bytes (text):  [MASK] = 255. Bytes 0xF5..0xFF never occur in UTF-8, and every corpus here is
                   checked to be UTF-8, so 255 is free and the vocabulary stays 256 (no padding, no
                   other special token is needed: windows are full).
    bpe (text):    [MASK] is added above the trained vocabulary (framework/data/text_tokens.py).
    synthetic:     [MASK] = vocab_size - 1 (the task's symbols then stop at vocab_size - 2);
                   PAD (0) is padding (attention_mask 0) and SEP (1) is special; both never masked.
Either way ``data.vocab_size`` already counts [MASK], so the model's ``vocab_size: ${data.vocab_size}``
stays right.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from .errors import DataConfigError
from .tasks import PAD, SEP

IGNORE = -100
MASK_FRACTION, RANDOM_FRACTION = 0.8, 0.1  # of the chosen tokens; the remaining 10% stay unchanged
BYTE_MASK_ID = 255  # never a byte of valid UTF-8


def check_mask_rate(value: Any) -> float:
    """``data.mask_rate`` must be a number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise DataConfigError(f"data.mask_rate must be a number strictly between 0 and 1 (BERT: 0.15), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class MaskingSpec:
    """How to mask one data source's sequences.

    rate:         share of eligible tokens chosen for prediction, in (0, 1).
    mask_id:      the [MASK] id.
    random_range: [low, high) of the ids drawn for the 10% random replacements (regular tokens only).
    special_ids:  ids never chosen (besides padding and [MASK] itself).
    pad_id:       id treated as padding: attention_mask 0 there, never chosen; None = no padding.
    """

    rate: float
    mask_id: int
    random_range: tuple[int, int]
    special_ids: tuple[int, ...] = ()
    pad_id: int | None = None

    def __post_init__(self) -> None:
        check_mask_rate(self.rate)
        low, high = self.random_range
        if not 0 <= low < high:
            raise ValueError(f"random_range must be a non-empty [low, high), got {self.random_range}")


def attention_mask_for(input_ids: torch.Tensor, spec: MaskingSpec) -> torch.Tensor:
    """(..., T) long: 1 for tokens, 0 for padding."""
    if spec.pad_id is None:
        return torch.ones_like(input_ids)
    return (input_ids != spec.pad_id).long()


def mask_tokens(
    input_ids: torch.Tensor, spec: MaskingSpec, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the 80/10/10 recipe to (B, T) ids; returns (masked input_ids, labels), both (B, T).

    ``generator`` None draws from torch's global RNG (training: a fresh mask every epoch, seeded by
    ``seed_everything`` and Lightning's worker seeding); a generator gives fixed masks (validation).
    """
    ids = input_ids.long()
    eligible = torch.ones_like(ids, dtype=torch.bool)
    for special in (*spec.special_ids, spec.mask_id, *(() if spec.pad_id is None else (spec.pad_id,))):
        eligible &= ids != special
    n_eligible = eligible.sum(-1)  # (B,)
    n_chosen = (n_eligible.float() * spec.rate).round().long().clamp(min=1).minimum(n_eligible)  # (B,)
    # A uniform random subset of n_chosen eligible positions per row: rank random keys, ineligible last.
    keys = torch.rand(ids.shape, generator=generator).masked_fill(~eligible, 2.0)  # (B, T)
    ranks = keys.argsort(-1).argsort(-1)  # (B, T): rank of each position's key within its row
    chosen = (ranks < n_chosen[:, None]) & eligible

    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    action = torch.rand(ids.shape, generator=generator)  # (B, T): which of the three treatments
    low, high = spec.random_range
    random_ids = torch.randint(low, high, ids.shape, generator=generator)
    out = torch.where(chosen & (action < MASK_FRACTION), torch.full_like(ids, spec.mask_id), ids)
    use_random = chosen & (action >= MASK_FRACTION) & (action < MASK_FRACTION + RANDOM_FRACTION)
    out = torch.where(use_random, random_ids, out)
    return out, labels


class MaskedLMDataset(Dataset):
    """Wraps a dataset of ``input_ids`` (T,) examples into masked-LM examples:
    ``input_ids`` (masked), ``attention_mask`` and ``labels``; the base's own labels are dropped.

    fixed_seed: None re-draws the masks on every access (dynamic masking, RoBERTa-style, for
    training); an int masks every example once, up front, from that seed, so validation scores the
    same positions every time.

    The DataLoader fetches a batch through ``__getitems__``, so masking runs once per batch on a
    (B, T) tensor rather than once per example (10x less overhead on CPU).
    """

    def __init__(self, base: Dataset, spec: MaskingSpec, fixed_seed: int | None = None) -> None:
        self.base, self.spec = base, spec
        self.fixed: dict[str, torch.Tensor] | None = None
        if fixed_seed is not None:
            generator = torch.Generator().manual_seed(fixed_seed % 2**63)
            self.fixed = self._mask(list(range(len(self))), generator)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def _mask(self, indices: list[int], generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        ids = torch.stack([self.base[i]["input_ids"] for i in indices])  # (N, T)
        masked, labels = mask_tokens(ids, self.spec, generator)
        return {"input_ids": masked, "attention_mask": attention_mask_for(ids, self.spec), "labels": labels}

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        if self.fixed is not None:
            rows = torch.as_tensor(indices, dtype=torch.long)
            batch = {k: v[rows] for k, v in self.fixed.items()}
        else:
            batch = self._mask(list(indices), None)
        return [dict(zip(batch, row)) for row in zip(*batch.values())]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])[0]


def synthetic_spec(task: str, rate: float, vocab_size: int) -> MaskingSpec:
    """Synthetic tasks: [MASK] = vocab_size - 1, PAD is padding; copy/reverse/sort keep SEP (1) special,
    mqar uses 1 as a key, so its regular tokens start there."""
    mask_id = vocab_size - 1
    if task == "mqar":
        return MaskingSpec(rate, mask_id, random_range=(1, mask_id), pad_id=PAD)
    return MaskingSpec(rate, mask_id, random_range=(SEP + 1, mask_id), special_ids=(SEP,), pad_id=PAD)


def masked_splits(train: Dataset, val: Dataset, spec: MaskingSpec, seed: int) -> tuple[MaskedLMDataset, MaskedLMDataset]:
    """(train, val) wrapped for masked_lm: dynamic masks for train, fixed ones for val."""
    return MaskedLMDataset(train, spec), MaskedLMDataset(val, spec, fixed_seed=seed)
