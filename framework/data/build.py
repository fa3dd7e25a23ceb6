"""Build a datamodule from ``cfg.data``: its options validated first, mistakes surfacing as DataConfigError."""
from __future__ import annotations

from typing import Any

import hydra
import lightning.pytorch as pl
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from .errors import DataConfigError, validate_data_config


def build_datamodule(cfg: Any, objective: str | None = None) -> pl.LightningDataModule:
    """The datamodule ``cfg._target_`` names, for the model's ``objective``.

    A datamodule with a ``config_class`` (every built-in one) gets its options validated by the models'
    validator before anything is built ("data.seq_len: ..."); others go through ``hydra.utils.instantiate``,
    whose wrapper around our config errors is unwrapped so the message is the whole, short error.
    """
    target = cfg.get("_target_")
    options = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    options = {k: v for k, v in options.items() if not k.startswith("_")}  # _target_, _convert_, ...
    if objective:  # the model's plugin decides the objective; the datamodule builds batches for it (or refuses)
        options["objective"] = objective
    try:
        config_class = getattr(hydra.utils.get_class(target), "config_class", None)
    except Exception:  # noqa: BLE001 - a bad _target_ gets Hydra's own error from instantiate below
        config_class = None
    if config_class is not None:
        dm = hydra.utils.get_class(target)(validate_data_config(config_class, options))
    else:
        try:
            dm = hydra.utils.instantiate(cfg, **({"objective": objective} if objective else {}))
        except InstantiationException as e:
            if isinstance(e.__cause__, DataConfigError):
                raise DataConfigError(str(e.__cause__)) from None
            raise
    if objective and dm.objective != objective:
        raise DataConfigError(f"data: {type(dm).__name__} built '{dm.objective}' batches, the model needs '{objective}'")
    for attr in ("vocab_size", "seq_len", "objective", "decode", "encode"):
        if not hasattr(dm, attr):
            raise DataConfigError(f"data._target_ {target!r} builds an object without `{attr}`")
    return dm
