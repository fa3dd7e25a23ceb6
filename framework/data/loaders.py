"""DataLoaders shared by every datamodule: seeded shuffling for train, fixed order for validation."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler


def train_loader(dataset: Dataset, batch_size: int, num_workers: int, seed: int) -> DataLoader:
    # A fresh generator per call: the same seed replays the same order of batches, epoch after epoch.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=RandomSampler(dataset, generator=generator),
        drop_last=True,  # fixed batch shape (no recompiles under torch.compile)
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
