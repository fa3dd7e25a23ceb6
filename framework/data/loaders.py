"""DataLoaders shared by every datamodule: seeded shuffling for train, fixed order for validation.

The training loader is resumable: its position (the epoch in progress and the batches of it already taken
for training) is part of every checkpoint. Lightning saves a loader's ``state_dict()`` with the fit loop and
hands it back on resume, so a run resumed after ``kill -9`` reads exactly the batches the interrupted run had
not trained on yet, in the same order, instead of replaying the epoch from its start.

With several processes (DDP, FSDP) every rank walks the same global batches and takes its own contiguous slice
of each (``Shard``): ``data.batch_size`` stays the global batch, and N processes see exactly the examples one
process would. Validation rows are split into contiguous per-rank ranges; the core's metrics sum over ranks.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from .errors import DataConfigError

Shard = tuple[int, int]  # (this process's rank, number of processes)
ONE_PROCESS: Shard = (0, 1)


def check_shard(batch_size: int, shard: Shard) -> None:
    rank, world = shard
    if batch_size % world:
        raise DataConfigError(f"data.batch_size: {batch_size} is the global batch; it must divide evenly among "
                              f"the {world} processes (each reads batch_size / {world} rows)")


class ResumableBatches(Sampler[list[int]]):
    """The batches of one epoch per iteration: ``epoch_batches(e)`` lists epoch e's batches of indices.

    The epoch index advances when an iteration starts (lazily, at its first batch, as ``RandomSampler`` draws
    its permutation), so epoch e of a resumed run is epoch e of the interrupted one.
    """

    def __init__(self, epoch_batches: Callable[[int], list[list[int]]], n_batches: int,
                 shard: Shard = ONE_PROCESS) -> None:
        self.epoch_batches, self.n_batches, self.shard = epoch_batches, n_batches, shard
        self.next_epoch = 0  # the epoch the next iteration reads
        self.skip = 0        # batches of that epoch to leave out (already trained on before a resume)
        self.taken = 0       # batches of the epoch in progress handed to training (``ResumableLoader.mark``)

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        epoch, skip = self.next_epoch, self.skip
        self.next_epoch, self.skip, self.taken = epoch + 1, 0, skip
        rank, world = self.shard
        for batch in self.epoch_batches(epoch)[skip:]:
            size = len(batch) // world
            yield batch[rank * size : (rank + 1) * size]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.next_epoch - 1, "batches": self.taken}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if epoch < 0 or batches >= self.n_batches:  # saved before the first batch, or at an epoch's end
            epoch, batches = epoch + 1, 0
        self.next_epoch, self.skip, self.taken = epoch, batches, batches


def shuffled_batches(n: int, batch_size: int, seed: int) -> Callable[[int], list[list[int]]]:
    """Epoch e's order is the one ``RandomSampler`` with a generator seeded ``seed`` gives (the order every run
    before resumable loaders had), cut into full batches (the last partial batch dropped)."""

    def epoch_batches(epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(seed)
        # RandomSampler draws two permutations an epoch (the second, for a remainder of 0 samples, as the epoch
        # runs out): replay the earlier epochs' draws, cheap next to an epoch of training.
        for _ in range(2 * epoch):
            torch.randperm(n, generator=generator)
        order = torch.randperm(n, generator=generator).tolist()
        return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]

    return epoch_batches


class ResumableLoader(DataLoader):
    """A DataLoader over ``ResumableBatches`` whose position is checkpointed (``state_dict``)."""

    def __init__(self, dataset: Dataset, batches: ResumableBatches, num_workers: int) -> None:
        super().__init__(dataset, batch_sampler=batches, num_workers=num_workers,
                         persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available())
        self.batches = batches

    def mark(self, batches_taken: int) -> None:
        """The training loop has taken ``batches_taken`` batches of the current epoch for training (the loader
        itself cannot tell: Lightning fetches a batch ahead)."""
        self.batches.taken = batches_taken

    def state_dict(self) -> dict[str, Any]:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state)


def train_loader(dataset: Dataset, batch_size: int, num_workers: int, seed: int,
                 shard: Shard = ONE_PROCESS) -> ResumableLoader:
    # The same seed replays the same order of batches; full batches only: a fixed batch shape (no recompiles
    # under torch.compile).
    check_shard(batch_size, shard)
    n = len(dataset)
    batches = ResumableBatches(shuffled_batches(n, batch_size, seed), n // batch_size, shard)
    return ResumableLoader(dataset, batches, num_workers)


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int, shard: Shard = ONE_PROCESS) -> DataLoader:
    rank, world = shard
    if world > 1:  # contiguous ranges, no padding: the token-weighted metrics summed over ranks are exact
        n = len(dataset)
        dataset = Subset(dataset, range(rank * n // world, (rank + 1) * n // world))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
