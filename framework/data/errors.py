"""The one error type the data layer raises for bad settings, and the validator that raises it.

Every datamodule's options are a config dataclass (``SyntheticDataConfig``, ``Seq2SeqDataConfig``,
``TextDataConfig``) validated by the same validator as the models' (``framework.config_schema``): unknown
keys, types, then the ranges and cross-field rules of its ``__post_init__``, every error naming
``data.<field>`` and what is allowed, before anything is built.
"""
from __future__ import annotations

import typing
from typing import Any, Literal, Mapping, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..config_schema import ConfigError, validate_config

T = TypeVar("T")

# Batch formats a datamodule can build; each module accepts the subset it supports.
Objective = Literal["causal_lm", "masked_lm", "seq2seq"]
OBJECTIVES: tuple[str, ...] = typing.get_args(Objective)


class DataConfigError(ConfigError):
    """A ``data.*`` setting is invalid; the message names the field and what is allowed."""


def validate_data_config(config_class: type[T], options: Mapping[str, Any]) -> T:
    """``config_class`` built from ``options`` (a YAML node's keys, or keyword arguments), or DataConfigError.

    OmegaConf containers (Hydra passes ``data.paths`` as a ListConfig) become plain lists and dicts first.
    """
    plain = {k: OmegaConf.to_object(v) if isinstance(v, (DictConfig, ListConfig)) else v for k, v in options.items()}
    try:
        return validate_config(config_class, plain, owner="data")
    except ConfigError as err:
        raise DataConfigError(str(err)) from None
