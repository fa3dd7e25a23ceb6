"""The files ``archlab new-plugin NAME`` writes, as text with placeholders.

__NAME__ plugin name (model=__NAME__, metric prefix), __PACKAGE__ its module (archlab___NAME__),
__DIST__ its distribution (archlab-__NAME__ with dashes), __CLASS__ the CamelCase class prefix.
Kept as Python strings (not package data) so they ship with the ``framework`` package as they are.
"""
from __future__ import annotations

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = "__NAME__: an archlab architecture plugin"
readme = "README.md"
requires-python = ">=3.10"
# archlab itself: install it first (from its repository); pip then accepts the installed copy.
dependencies = ["archlab"]

[project.optional-dependencies]
test = ["pytest>=8"]

# How archlab finds the plugin: `archlab plugins` lists it, `archlab train model=__NAME__` trains it.
[project.entry-points."archlab.plugins"]
__NAME__ = "__PACKAGE__:PLUGIN"

[tool.setuptools]
packages = ["__PACKAGE__", "__PACKAGE__.conf"]

# The YAML configs ship inside the package (Hydra reads them as pkg://__PACKAGE__.conf).
[tool.setuptools.package-data]
"__PACKAGE__.conf" = ["model/*.yaml"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

README = '''\
# __NAME__ (archlab plugin)

```bash
pip install -e .                                   # registers the archlab.plugins entry point
archlab plugins                                    # lists __NAME__ and its preset __NAME___gated
archlab train model=__NAME__ data=synthetic        # trains it (W&B offline run, checkpoints)
archlab train -m model=__NAME__ model.ffn=mlp,swiglu data=synthetic   # a sweep over one option
pytest                                             # archlab's contract kit + this plugin's own tests
```

Files: `__PACKAGE__/config.py` (every option, typed and validated), `model.py` (the network, built from
archlab's `framework.nn` blocks), `metrics.py` (what reaches W&B: each metric's name is its log key, `__NAME__/...`),
`conf/model/__NAME__.yaml` (the `model=__NAME__` option) and `conf/model/__NAME___gated.yaml` (a preset).
See archlab's docs/plugins.md.
'''

INIT = '''\
"""The __NAME__ archlab plugin. Found through the entry point `__NAME__ = "__PACKAGE__:PLUGIN"` in
pyproject.toml; archlab never imports it by name."""
from framework import Plugin

from .config import __CLASS__Config
from .metrics import __NAME___metrics
from .model import __CLASS__, build___NAME__

PLUGIN = Plugin(
    name="__NAME__",  # model=__NAME__ (its metrics.py names its log keys __NAME__/...)
    description="__NAME__: decoder-only transformer (edit me)",
    objective="causal_lm",  # causal_lm | masked_lm | seq2seq: picks the loss and the batch format
    config_class=__CLASS__Config,
    build=build___NAME__,
    metrics=__NAME___metrics,
    config_package="__PACKAGE__.conf",  # holds model/__NAME__.yaml and presets
)

__all__ = ["PLUGIN", "__CLASS__", "__CLASS__Config"]
'''

CONFIG = '''\
"""__CLASS__Config: every option of the __NAME__ plugin, one line of meaning each.

Each field is a `model.<field>=...` override (and a sweep axis). Types are checked by archlab before
training (Literal = a choice); cross-field rules live in __post_init__ and raise ConfigError via `check`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from framework.config_schema import check


@dataclass
class __CLASS__Config:
    vocab_size: int = 256          # token ids are in [0, vocab_size) (the YAML takes it from the data)
    max_seq_len: int = 256         # longest context the model is trained on
    d_model: int = 64              # residual stream width
    n_layers: int = 2              # transformer blocks
    n_heads: int = 4               # attention heads; head_dim = d_model / n_heads
    d_ff: int | None = None        # FFN hidden width; null = 4 * d_model
    dropout: float = 0.0           # on attention probabilities and residual branches
    position: Literal["rope", "alibi"] = "rope"   # relative positions applied inside attention
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    ffn: Literal["mlp", "swiglu", "geglu"] = "mlp"  # framework.nn.make_feedforward kinds

    def __post_init__(self) -> None:
        check(self.vocab_size >= 2, "vocab_size", f"must be >= 2, got {self.vocab_size}")
        for name in ("max_seq_len", "d_model", "n_layers", "n_heads"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(self.d_model % self.n_heads == 0, "d_model",
              f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.position == "rope":
            check(self.d_model // self.n_heads % 2 == 0, "position", "rope needs an even head_dim (d_model / n_heads)")
        if self.d_ff is not None:
            check(self.d_ff >= 1, "d_ff", f"must be >= 1 or null, got {self.d_ff}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")

    @property
    def ffn_hidden(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model
'''

MODEL = '''\
"""The __NAME__ network: a pre-norm decoder-only transformer assembled from archlab's building blocks
(framework.nn), so attention, FFN kinds, norms, positions and the KV cache are not rewritten here."""
from __future__ import annotations

import torch
from torch import nn

from framework import ModelOutput
from framework.nn import KVCache, SelfAttention, make_feedforward, make_norm
from framework.generation import sample_next_token

from .config import __CLASS__Config


class Block(nn.Module):
    """x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, cfg: __CLASS__Config) -> None:
        super().__init__()
        self.attn_norm = make_norm(cfg.norm, cfg.d_model)
        self.attn = SelfAttention(cfg.d_model, cfg.n_heads, causal=True, dropout=cfg.dropout,
                                  position=cfg.position, max_seq_len=cfg.max_seq_len)
        self.ffn_norm = make_norm(cfg.norm, cfg.d_model)
        self.ffn = make_feedforward(cfg.ffn, cfg.d_model, cfg.ffn_hidden, dropout=cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), attention_mask, cache))  # (B, T, C)
        return x + self.ffn(self.ffn_norm(x))


class __CLASS__(nn.Module):
    def __init__(self, cfg: __CLASS__Config) -> None:
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.final_norm = make_norm(cfg.norm, cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        self.lm_head.weight = self.tok_emb.weight  # tied input/output embeddings

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: list[KVCache] | None = None
    ) -> ModelOutput:
        """input_ids: (B, T); attention_mask: (B, S), 1 = token, 0 = padding. Logits (B, T, V) predict the
        next token at every position (the data layer shifts the labels)."""
        x = self.tok_emb(input_ids)  # (B, T, C)
        residual_rms = []
        for i, block in enumerate(self.blocks):
            x = block(x, attention_mask, cache[i] if cache else None)
            residual_rms.append(x.detach().float().pow(2).mean(-1).sqrt().mean())
        logits = self.lm_head(self.final_norm(x))  # (B, T, V)
        # Statistics are outputs: metrics.py turns them into logged values. A key with "/" (e.g. "resid/rms",
        # one value per layer) would be a shared statistic that archlab itself averages and logs.
        with torch.no_grad():
            logp = logits.float().log_softmax(-1)
            entropy = -(logp.exp() * logp).sum(-1).mean()
        stats = {"residual_rms": torch.stack(residual_rms), "logit_entropy": entropy}
        return ModelOutput(logits=logits, aux_loss=logits.new_zeros((), dtype=torch.float32), stats=stats)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append max_new_tokens tokens to (B, T) input_ids, one step at a time against a KV cache;
        temperature=0 is greedy. The context is cropped to max_seq_len (the cache rebuilt) when full."""
        was_training = self.training
        self.eval()
        limit, tokens, cache = self.config.max_seq_len, input_ids, None
        for _ in range(max_new_tokens):
            if cache is not None and cache[0].length < limit:
                step = tokens[:, -1:]
            else:  # first step, or the cache is full: refill from the last `limit` tokens
                cache = [KVCache() for _ in self.blocks]
                step = tokens[:, -limit:]
            logits = self(step, cache=cache).logits[:, -1, :]  # (B, V)
            tokens = torch.cat([tokens, sample_next_token(logits, temperature, top_k, top_p, generator)], dim=1)
        self.train(was_training)
        return tokens


def build___NAME__(cfg: __CLASS__Config) -> __CLASS__:
    return __CLASS__(cfg)
'''

METRICS = '''\
"""Metrics the __NAME__ plugin contributes. Each is a torchmetrics Metric whose update(stats) consumes the
model's `stats` dict; archlab logs compute() after every validation under the metric's name, as given (dict
results as `<name>/<key>`), to W&B and every other logger: prefix the names with the plugin's name."""
from __future__ import annotations

import torch
from torchmetrics import MeanMetric, Metric

from framework.metrics import LayerMean

from .config import __CLASS__Config


class MeanOfStat(MeanMetric):
    """Running mean of the scalar stats[key]."""

    def __init__(self, key: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.key = key

    def update(self, stats: dict[str, torch.Tensor]) -> None:  # type: ignore[override]
        super().update(stats[self.key].detach().float())


def __NAME___metrics(cfg: __CLASS__Config) -> dict[str, Metric]:
    return {
        # Mean entropy (nats) of the next-token distribution: falls as the model grows confident.
        "__NAME__/logit_entropy": MeanOfStat("logit_entropy"),
        # RMS of the residual stream after each block (logged per layer and as the mean).
        "__NAME__/residual_rms": LayerMean("residual_rms", cfg.n_layers),
    }
'''

YAML = '''\
# model=__NAME__: every key except `plugin` is a field of __PACKAGE__/config.py:__CLASS__Config.
plugin: __NAME__
vocab_size: ${data.vocab_size}
max_seq_len: ${data.seq_len}
d_model: 64
n_layers: 2
n_heads: 4
d_ff: null
dropout: 0.0
position: rope
norm: layernorm
ffn: mlp
'''

PRESET = '''\
# model=__NAME___gated: a preset of the __NAME__ plugin (Llama-style SwiGLU FFN and RMSNorm).
# It inherits model/__NAME__.yaml and overrides a few fields.
defaults:
  - __NAME__
  - _self_

norm: rmsnorm
ffn: swiglu
'''

TESTS = '''\
"""The __NAME__ plugin's tests: archlab's contract kit (one test per property the framework relies on),
then this plugin's own. Run with `pytest` in the plugin's folder, after `pip install -e .`."""
import pytest
import torch

from framework import build_model
from framework.testing import parametrize_with_checks

torch.set_num_threads(1)  # tiny tensors: extra threads only contend


@parametrize_with_checks("__NAME__")
def test_contract(contract_check):
    contract_check()


@parametrize_with_checks("__NAME__", model="__NAME___gated")
def test_preset_contract(contract_check):
    contract_check()


@pytest.mark.parametrize("ffn", ["mlp", "swiglu", "geglu"])
@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_every_option_runs(ffn, position):
    model = build_model("__NAME__", vocab_size=16, d_model=16, n_heads=2, ffn=ffn, position=position)
    out = model(torch.randint(0, 16, (2, 5)))
    assert out.logits.shape == (2, 5, 16)


def test_bad_option_is_rejected_naming_the_field():
    with pytest.raises(ValueError, match="ffn"):
        build_model("__NAME__", ffn="kan")
'''


def files(name: str) -> dict[str, str]:
    """Relative path -> content of every file of a new plugin called ``name``."""
    package = f"archlab_{name}"
    values = {
        "__PACKAGE__": package,
        "__DIST__": f"archlab-{name.replace('_', '-')}",
        "__CLASS__": "".join(part.capitalize() for part in name.split("_") if part) or name,
        "__NAME__": name,
    }
    layout = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{package}/__init__.py": INIT,
        f"{package}/config.py": CONFIG,
        f"{package}/model.py": MODEL,
        f"{package}/metrics.py": METRICS,
        f"{package}/conf/__init__.py": "",
        f"{package}/conf/model/{name}.yaml": YAML,
        f"{package}/conf/model/{name}_gated.yaml": PRESET,
        f"tests/test_{name}.py": TESTS,
    }
    out = {}
    for path, text in layout.items():
        for key in ("__PACKAGE__", "__DIST__", "__CLASS__", "__NAME__"):  # __NAME__ last: it is inside the others
            text = text.replace(key, values[key])
        out[path] = text
    return out


def preset_names(name: str) -> list[str]:
    """The ``model=`` options a new plugin ``name`` adds (its own and its presets)."""
    return [name, f"{name}_gated"]
