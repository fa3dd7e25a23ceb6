"""T5 span corruption (Raffel et al. 2020, section 3.1.4) on byte-level text, objective ``seq2seq``.

A window of ``n`` bytes loses ``round(n * noise_density)`` of them in ``round(noise / mean_span_length)``
spans. The source keeps the rest with one sentinel in place of each dropped span; the target lists each
sentinel followed by the bytes it replaced. Both end in EOS:

  text    "The quick brown fox"
  source  "The <S0> brown<S1>x" EOS
  target  <S0> "quick" <S1> " fo" EOS

Span lengths are a random partition (each >= 1) of the noise and of the kept bytes; spans alternate,
starting with kept text, as in T5. All windows of one length give the same source and target length,
so batches need no padding (attention masks are all ones).

Token ids: bytes 0..255; ``PAD = 0`` and ``EOS = 1`` (the NUL and SOH control bytes, which UTF-8 text
does not use) and sentinel ``i`` = ``vocab_size - 1 - i`` (T5's order, from the top of the
vocabulary), so ``vocab_size >= 256 + number of spans``. The batch format is the one of
``framework/data/seq2seq.py``.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .errors import DataConfigError
from .seq2seq import DECODER_START, EOS, PAD, batch_from_padded

NOISE_DENSITY = 0.15
MEAN_SPAN_LENGTH = 3.0
BYTE_VOCAB = 256


def span_counts(
    n: int, noise_density: float = NOISE_DENSITY, mean_span_length: float = MEAN_SPAN_LENGTH
) -> tuple[int, int]:
    """(noise tokens, spans) for a window of ``n`` tokens; at least one of each, one kept token."""
    noise = min(max(int(round(n * noise_density)), 1), n - 1)
    spans = max(int(round(noise / mean_span_length)), 1)
    return noise, spans


def corrupted_lengths(
    n: int, noise_density: float = NOISE_DENSITY, mean_span_length: float = MEAN_SPAN_LENGTH
) -> tuple[int, int]:
    """(source_len, target_len), EOS included, for windows of ``n`` tokens."""
    noise, spans = span_counts(n, noise_density, mean_span_length)
    return n - noise + spans + 1, noise + spans + 1


def check_span_corruption(
    seq_len: int, vocab_size: int, noise_density: float = NOISE_DENSITY, mean_span_length: float = MEAN_SPAN_LENGTH
) -> None:
    """Raise DataConfigError unless windows of ``seq_len`` bytes corrupt into sources and targets that
    fit ``seq_len`` and the sentinels fit the vocabulary."""
    if isinstance(noise_density, bool) or not isinstance(noise_density, (int, float)) or not 0.0 < noise_density < 1.0:
        raise DataConfigError(f"data.noise_density (span corruption) must be a number strictly between 0 and 1, "
                              f"got {noise_density!r} (T5: 0.15)")
    if isinstance(mean_span_length, bool) or not isinstance(mean_span_length, (int, float)) or mean_span_length < 1:
        raise DataConfigError(f"data.mean_span_length (span corruption) must be a number >= 1, "
                              f"got {mean_span_length!r} (T5: 3)")
    if seq_len < 4:
        raise DataConfigError(f"data.seq_len={seq_len} is too small for span corruption; use data.seq_len >= 16")
    _, spans = span_counts(seq_len, noise_density, mean_span_length)
    source_len, target_len = corrupted_lengths(seq_len, noise_density, mean_span_length)
    if max(source_len, target_len) > seq_len:
        raise DataConfigError(
            f"data.seq_len={seq_len} is too small for span corruption (sources of {source_len} tokens); "
            "use data.seq_len >= 16"
        )
    if vocab_size < BYTE_VOCAB + spans:
        raise DataConfigError(
            f"data.vocab_size={vocab_size} is too small for span corruption at seq_len {seq_len}: 256 bytes plus "
            f"{spans} sentinel tokens need data.vocab_size >= {BYTE_VOCAB + spans} (e.g. data.vocab_size=320)"
        )


def _partition(total: int, parts: int, generator: torch.Generator | None) -> torch.Tensor:
    """``parts`` random positive integers summing to ``total``."""
    cuts = torch.randperm(total - 1, generator=generator)[: parts - 1] + 1
    edges = torch.cat([torch.tensor([0]), cuts.sort().values, torch.tensor([total])])
    return edges.diff()


def noise_mask(
    n: int, noise_density: float, mean_span_length: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(n,) bool, True on the dropped tokens: alternating kept/noise spans, kept first."""
    noise, spans = span_counts(n, noise_density, mean_span_length)
    noise_lengths = _partition(noise, spans, generator)
    kept_lengths = _partition(n - noise, spans, generator)
    interleaved = torch.stack([kept_lengths, noise_lengths], dim=1).flatten()  # kept, noise, kept, noise, ...
    flags = torch.tensor([False, True]).repeat(spans)
    return flags.repeat_interleave(interleaved)


def corrupt(tokens: torch.Tensor, mask: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, target) long tensors from (n,) ``tokens`` and their (n,) noise ``mask``."""
    starts = mask & ~torch.cat([torch.tensor([False]), mask[:-1]])  # first token of each noise span
    sentinel = vocab_size - torch.cumsum(starts.long(), 0)  # span i (1-based) -> vocab_size - i
    eos = torch.tensor([EOS])
    # Source: kept tokens, and each noise span collapsed into its sentinel.
    source = torch.where(starts, sentinel, tokens)[~mask | starts]
    # Target: for each noise span its sentinel, then its tokens.
    target_parts = torch.stack([sentinel, tokens], dim=1)  # (n, 2): a sentinel slot before each token
    select = torch.stack([starts, mask], dim=1)  # sentinel only at span starts; every noise token
    target = target_parts[select]
    return torch.cat([source, eos]), torch.cat([target, eos])


class SpanCorruptionDataset(Dataset):
    """Wraps a dataset of byte windows (``input_ids`` (T,)) into seq2seq examples. With ``seed`` set
    the noise of example i is fixed (validation); otherwise it is drawn afresh each time (training)."""

    def __init__(
        self, windows: Dataset, vocab_size: int, seed: int | None = None,
        noise_density: float = NOISE_DENSITY, mean_span_length: float = MEAN_SPAN_LENGTH,
    ) -> None:
        self.windows, self.vocab_size, self.seed = windows, vocab_size, seed
        self.noise_density, self.mean_span_length = noise_density, mean_span_length

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        tokens = self.windows[i]["input_ids"].long()  # (T,)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + i) if self.seed is not None else None
        mask = noise_mask(len(tokens), self.noise_density, self.mean_span_length, generator)
        source, target = corrupt(tokens, mask, self.vocab_size)
        batch = batch_from_padded(source[None], torch.ones_like(source)[None], target[None])
        return {k: v[0] for k, v in batch.items()}


def span_corrupted_splits(
    train: Dataset, val: Dataset, vocab_size: int, seed: int,
    noise_density: float = NOISE_DENSITY, mean_span_length: float = MEAN_SPAN_LENGTH,
) -> tuple[Dataset, Dataset]:
    """Training windows get fresh noise every epoch; validation windows a fixed noise per window."""
    shape = dict(noise_density=noise_density, mean_span_length=mean_span_length)
    return SpanCorruptionDataset(train, vocab_size, **shape), SpanCorruptionDataset(val, vocab_size, seed=seed, **shape)


def set_token_ids(datamodule: object) -> None:
    """Give a text datamodule the seq2seq attributes (pad/eos/decoder start) span corruption uses."""
    datamodule.pad_token_id, datamodule.eos_token_id, datamodule.decoder_start_token_id = PAD, EOS, DECODER_START
