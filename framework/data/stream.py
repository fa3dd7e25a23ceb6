"""Contiguous streams for stateful (truncated-BPTT) training: the classic char-rnn / AWD-LSTM layout.

The corpus is cut into ``batch_size`` equal streams laid side by side; batch ``b`` holds window ``b`` of
every stream, so row ``i`` of batch ``b + 1`` continues row ``i`` of batch ``b`` exactly where it ended:

    stream i = data[i * L : (i + 1) * L]          L = (len(data) - 1) // batch_size
    batch b, row i = data[i * L + b * T : i * L + (b + 1) * T (+1 for the labels)]

A model that carries its hidden state from batch to batch therefore sees each stream as one long
sequence. Every epoch replays the same batches in order (the stream has no other order).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .loaders import ONE_PROCESS, ResumableBatches, ResumableLoader, Shard, check_shard


def contiguous_starts(n_tokens: int, seq_len: int, batch_size: int) -> torch.Tensor:
    """(batch_size, n_batches) window offsets: row i, column b is where row i of batch b starts.

    Each window reads seq_len + 1 tokens (inputs and shifted labels), so a stream of L tokens holds
    (L - 1) // seq_len windows."""
    stream_len = n_tokens // batch_size
    n_batches = (stream_len - 1) // seq_len
    if n_batches < 1:
        raise ValueError(
            f"{n_tokens} tokens make {batch_size} streams of {stream_len} tokens: too short for one window of "
            f"seq_len {seq_len} (+1); use a smaller batch_size or seq_len"
        )
    rows = torch.arange(batch_size)[:, None] * stream_len  # (B, 1)
    cols = torch.arange(n_batches)[None, :] * seq_len  # (1, N)
    return rows + cols  # (B, N)


class ContiguousBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices for windows laid out row-major as ``contiguous_starts(...).flatten()``:
    batch b = [i * n_batches + b for each row i]."""

    def __init__(self, batch_size: int, n_batches: int) -> None:
        self.batch_size, self.n_batches = batch_size, n_batches

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(self.n_batches):
            yield [i * self.n_batches + b for i in range(self.batch_size)]


def contiguous_loader(
    dataset_factory: Callable[[torch.Tensor, torch.Tensor, int], Dataset],
    data: torch.Tensor,
    seq_len: int,
    batch_size: int,
    num_workers: int,
    shard: Shard = ONE_PROCESS,
) -> DataLoader:
    """A DataLoader over ``data`` in the contiguous layout. ``dataset_factory(data, starts, seq_len)``
    builds the window dataset (e.g. ``WindowDataset``) from flat window offsets."""
    starts = contiguous_starts(len(data), seq_len, batch_size)  # (B, N)
    dataset: Dataset = dataset_factory(data, starts.flatten(), seq_len)
    batches = list(ContiguousBatchSampler(batch_size, starts.shape[1]))  # every epoch the same
    check_shard(batch_size, shard)  # each rank carries the recurrent state of its own rows
    return ResumableLoader(dataset, ResumableBatches(lambda epoch: batches, len(batches), shard), num_workers)
