"""Optional model capabilities are typing.Protocols (framework/capabilities.py), checked with isinstance."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from framework.capabilities import (
    Encodes, Generates, HasFigures, HasGradStats, PredictsMasked, ResetsState, takes_predict_mask,
)
from framework.output import ModelOutput
from framework.train import _sample

PROTOCOLS = (Generates, Encodes, HasFigures, ResetsState, HasGradStats)


class Everything(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # the sampler reads the device from the parameters

    def forward(self, input_ids, attention_mask=None, predict_mask=None) -> ModelOutput:
        return ModelOutput(logits=torch.zeros(*input_ids.shape, 4))

    def generate(self, input_ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None):
        return torch.cat([input_ids, torch.full((input_ids.shape[0], max_new_tokens), 65)], dim=1)

    def encode(self, input_ids, attention_mask=None):
        return input_ids.float()

    def figures(self):
        return {}

    def reset_state(self) -> None:
        pass

    def grad_stats(self):
        return {}


def test_a_model_offers_a_capability_by_having_the_method():
    model, plain = Everything(), nn.Linear(2, 2)
    for protocol in PROTOCOLS:
        assert isinstance(model, protocol), protocol
        assert not isinstance(plain, protocol), protocol
    # Every module has a forward: masked prediction is told by its signature, not by isinstance.
    assert takes_predict_mask(model) and not takes_predict_mask(plain)
    assert PredictsMasked.__doc__ and "takes_predict_mask" in PredictsMasked.__doc__


class Codec:
    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode()


def test_train_samples_only_from_models_that_generate():
    cfg = OmegaConf.create({"seed": 0, "sample": {"prompt": "A", "max_new_tokens": 2}})
    assert _sample(Everything(), Codec(), cfg) == "AAA"
    assert _sample(nn.Linear(2, 2), Codec(), cfg) is None


def test_the_core_discovers_capabilities_with_isinstance_not_getattr():
    root = Path(__file__).parent.parent / "framework"
    names = "generate|encode|figures|reset_state|grad_stats"
    pattern = re.compile(rf"""(hasattr|getattr)\((self\.)?model, ["']({names})["']""")
    offenders = [f"{p.relative_to(root)}: {line.strip()}" for p in root.rglob("*.py")
                 for line in p.read_text().splitlines() if pattern.search(line)]
    assert not offenders, offenders
