"""Build a datamodule from ``cfg.data`` so that config mistakes surface as DataConfigError."""
from __future__ import annotations

from typing import Any

import hydra
import lightning.pytorch as pl
from hydra.errors import InstantiationException

from .errors import DataConfigError


def build_datamodule(cfg: Any) -> pl.LightningDataModule:
    """``hydra.utils.instantiate(cfg)``, re-raising our config errors without Hydra's wrapper.

    Hydra wraps every constructor error in ``InstantiationException``; unwrapping keeps the message
    ("data.seq_len=... is too large ...") as the whole, short error.
    """
    try:
        dm = hydra.utils.instantiate(cfg)
    except InstantiationException as e:
        if isinstance(e.__cause__, DataConfigError):
            raise DataConfigError(str(e.__cause__)) from None
        raise
    for attr in ("vocab_size", "seq_len", "objective", "decode", "encode"):
        if not hasattr(dm, attr):
            raise DataConfigError(f"data._target_ {cfg.get('_target_')!r} builds an object without `{attr}`")
    return dm
