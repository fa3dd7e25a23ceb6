"""What every built-in datamodule shares: options as one validated config dataclass, train/val datasets built
once, the seeded loaders, and the id rendering of the synthetic tasks."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import validate_data_config
from .errors import DataConfigError
from .loaders import ONE_PROCESS, Shard, eval_loader, train_loader


class TensorDictDataset(Dataset):
    """Rows of equally long (N, ...) tensors, returned as dicts."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


class ConfiguredDataModule(pl.LightningDataModule):
    """A datamodule whose options are the fields of ``config_class`` (set as attributes); subclasses build
    their datasets in ``build_datasets``."""

    config_class: ClassVar[type]

    def __init__(self, config: Any | None = None, **options: Any) -> None:
        super().__init__()
        # Keyword options (Hydra's instantiate, tests) are validated here; build_datamodule passes a config.
        self.config = config if config is not None else validate_data_config(self.config_class, options)
        for f in dataclasses.fields(self.config):
            setattr(self, f.name, getattr(self.config, f.name))
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        """(train, val) datasets, built once on the first ``setup``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is None:
            self.train_dataset, self.val_dataset = self.build_datasets()

    def shard(self) -> Shard:
        """(rank, processes) of the trainer this datamodule feeds: each rank reads its own slice of every batch."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return ONE_PROCESS
        if trainer._accelerator_connector.use_distributed_sampler:
            raise DataConfigError("trainer.use_distributed_sampler: must be false with several processes (archlab's "
                                  "loaders shard every batch by rank themselves; conf/trainer/ddp_cpu.yaml sets it)")
        return trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return train_loader(self.train_dataset, self.batch_size, self.num_workers, self.seed, self.shard())

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return eval_loader(self.val_dataset, self.batch_size, self.num_workers, self.shard())


def render_ids(ids: Sequence[int] | torch.Tensor, pad: int, sep: int | None) -> str:
    """Space-separated ids: '.' for ``pad``, '|' for ``sep`` (None: no separator token), else the id."""
    if isinstance(ids, torch.Tensor):
        ids = ids.flatten().tolist()
    return " ".join("." if i == pad else "|" if i == sep else str(int(i)) for i in ids)


def parse_ids(text: str, pad: int, sep: int | None, vocab_size: int) -> list[int]:
    """``render_ids``'s rendering back into ids."""
    out = []
    for tok in text.split():
        if tok == ".":
            out.append(pad)
        elif tok == "|" and sep is not None:
            out.append(sep)
        elif tok.isdigit() and int(tok) < vocab_size:
            out.append(int(tok))
        else:
            raise ValueError(f"cannot encode {tok!r}: expected '.', '|' or an id below {vocab_size}")
    return out
