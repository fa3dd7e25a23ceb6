"""What a plugin declares. One ``Plugin`` object per entry point in group ``archlab.plugins``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from torch import nn
from torchmetrics import Metric

Objective = Literal["causal_lm", "masked_lm", "seq2seq"]
OBJECTIVES: tuple[str, ...] = ("causal_lm", "masked_lm", "seq2seq")
ENTRY_POINT_GROUP = "archlab.plugins"


@dataclass(frozen=True, eq=False)  # identity: a plugin is one object, hashable (cached by the contract kit)
class Plugin:
    """An architecture plugin.

    name:           the ``model=<name>`` option (and, by convention, the prefix of its metric names).
    description:    one line for ``archlab plugins``.
    objective:      ``causal_lm`` | ``masked_lm`` | ``seq2seq``: picks the loss and the data format.
    config_class:   a dataclass; every field is a model option, validated before building.
    build:          ``build(config) -> nn.Module`` honouring the forward contract (see ``ModelOutput``).
    metrics:        ``metrics(config) -> {name: Metric}``; each ``Metric.update(stats)`` consumes the
                    model's ``stats`` dict. Fresh instances per call. A name is the full log key
                    (``gpt/residual_rms``, ``moe/load_cv``); the core adds only ``train/`` on training steps.
    config_package: importable package holding ``model/<name>.yaml`` and presets (Hydra options).
    upgrades:       checkpoints of other (retired) plugin names this plugin can load:
                    ``{old name: upgrade(old name, model_config, state_dict) -> (model_config, state_dict)}``.
    hf_architectures: the Hugging Face architectures its models convert to and from
                    (``framework.interop.HFArchitecture``: ``archlab export format=hf`` / ``archlab import``).
    """

    name: str
    description: str
    objective: Objective
    config_class: type
    build: Callable[[Any], nn.Module]
    metrics: Callable[[Any], dict[str, Metric]] = lambda config: {}
    config_package: str | None = None
    upgrades: Mapping[str, Callable[[str, dict, dict], tuple[dict, dict]]] = field(default_factory=dict)
    hf_architectures: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"plugin {self.name!r}: objective {self.objective!r} is not one of {OBJECTIVES}")
