"""The files ``archlab new-plugin NAME`` writes, as text with placeholders.

__NAME__ plugin name (model=__NAME__, metric prefix), __PACKAGE__ its module (archlab___NAME__),
__DIST__ its distribution (archlab-__NAME__ with dashes), __CLASS__ the CamelCase class prefix.
Kept as Python strings (not package data) so they ship with the ``framework`` package as they are.
"""
from __future__ import annotations

import re

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = "__NAME__: an archlab token mixer and the plugin that stacks it"
readme = "README.md"
requires-python = ">=3.10"
# archlab itself: install it first (from its repository); pip then accepts the installed copy.
dependencies = ["archlab"]

[project.optional-dependencies]
test = ["pytest>=8"]

# How archlab finds the plugin: `archlab plugins` lists it, `archlab train model=__NAME__` trains it.
[project.entry-points."archlab.plugins"]
__NAME__ = "__PACKAGE__:PLUGIN"

# How every decoder stack finds the mixer: model.mixer=__NAME__ or model.layers=[attention,__NAME__].
[project.entry-points."archlab.mixers"]
__NAME__ = "__PACKAGE__.mixer:SPEC"

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

A token mixer, `__NAME__` (a gated causal depthwise convolution: replace it with your idea), and the
plugin that trains it: archlab's composable decoder stack with `__NAME__` layers.

```bash
pip install -e .                                   # registers the plugin and the mixer (entry points)
archlab plugins                                    # lists __NAME__, its preset __NAME___hybrid and the mixer
archlab train model=__NAME__ data=synthetic        # trains it (W&B offline run, checkpoints)
archlab train -m model=__NAME__ model.ffn=mlp,swiglu data=synthetic   # a sweep over one stack option
archlab train model=gpt 'model.layers=[attention,__NAME__]'           # the mixer in any stack
pytest                                             # archlab's contract kit + this plugin's own tests
```

Files: `__PACKAGE__/mixer.py` (the mixer: forward, decode state, statistics, options, its `MixerSpec`),
`metrics.py` (what reaches W&B: `__NAME__/gate`, `__NAME__/past_share`), `__init__.py` (the plugin: the
stack's config and build), `conf/model/__NAME__.yaml` (`model=__NAME__`: `mixer: __NAME__` in every layer)
and `conf/model/__NAME___hybrid.yaml` (a preset: `__NAME__` and attention layers alternating).
Options of the mixer: `+model.mixer_options.__NAME__.kernel_size=8` (a sweep axis like any other).
See archlab's docs/plugins.md and docs/stack.md.
'''

INIT = '''\
\"\"\"The __NAME__ archlab plugin: archlab's decoder stack (framework.stack) whose layers use the __NAME__ token
mixer (mixer.py). Found through the entry points in pyproject.toml; archlab never imports it by name.\"\"\"
from framework import Plugin
from framework.stack import StackConfig, build_stack, stack_metrics

from .mixer import SPEC, __CLASS__Mixer

PLUGIN = Plugin(
    name="__NAME__",  # model=__NAME__ (conf/model/__NAME__.yaml); its metrics are logged as __NAME__/...
    description="__NAME__: the decoder stack with the __NAME__ token mixer (edit mixer.py)",
    objective="causal_lm",  # causal_lm | masked_lm | seq2seq: picks the loss and the batch format
    config_class=StackConfig,  # every stack option (mixer, layers, ffn, norm, position, ...) is a model.<key>
    build=build_stack,  # embeddings, norms, residuals, init and generate (KV caches / decode states) are the stack's
    metrics=stack_metrics,  # each mixer family's metrics for its layers (this mixer's: metrics.py); wrap to add more
    config_package="__PACKAGE__.conf",  # holds model/__NAME__.yaml and presets
)

__all__ = ["PLUGIN", "SPEC", "__CLASS__Mixer"]
'''

MIXER = '''\
\"\"\"The __NAME__ token mixer: a gated causal depthwise convolution (a "short convolution", as in H3, Hyena and
Mamba), small enough to read at once. Replace the idea, keep the contract (archlab's framework/mixers/spec.py):

- ``forward(x, attention_mask, state)``: x (B, T, d_model) -> (B, T, d_model); position t may use positions <= t only.
- ``new_state()``: the decode state generation passes back in (here the last kernel_size - 1 inputs: O(1) in the
  context), updated in place, so token-by-token decoding equals a full forward.
- statistics are returned values (``MixerResult.stats``): keys without "/" are this family's own, stacked over its
  layers for the metrics in metrics.py; a key with "/" would be a shared statistic the core logs itself.

Registered as ``SPEC`` in the entry-point group ``archlab.mixers`` (pyproject.toml), so every stack can use it.
\"\"\"
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from framework.config_schema import check, validate_config
from framework.mixers import LayerContext, MixerResult, MixerSpec

from .metrics import mixer_metrics


@dataclass
class __CLASS__Options:
    \"\"\"``model.mixer_options.__NAME__`` (e.g. ``+model.mixer_options.__NAME__.kernel_size=8``), checked at build.\"\"\"

    kernel_size: int = 4  # tokens each output sees: itself and the kernel_size - 1 before it

    def __post_init__(self) -> None:
        check(self.kernel_size >= 1, "kernel_size", f"must be >= 1, got {self.kernel_size}")


class ConvState:
    \"\"\"Decode state of one layer: the convolution's last kernel_size - 1 inputs (B, K-1, C); None = zeros.\"\"\"

    def __init__(self, window: torch.Tensor | None = None) -> None:
        self.window = window

    def detach(self) -> "ConvState":  # model.stateful=true carries the state across batches, cut from the graph
        return ConvState(None if self.window is None else self.window.detach())

    @property
    def batch_size(self) -> int | None:
        return None if self.window is None else self.window.shape[0]


class __CLASS__Mixer(nn.Module):
    \"\"\"y = out_proj(sigmoid(gate) * causal_conv(value)), (value, gate) = in_proj(x); one filter per channel.\"\"\"

    def __init__(self, d_model: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.in_proj = nn.Linear(d_model, 2 * d_model, bias=bias)  # value and gate
        self.conv = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model, bias=bias)  # depthwise, no padding
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def init_weights(self, std: float, out_std: float) -> None:
        \"\"\"After the stack's normal(std) pass over Linear layers (the conv keeps PyTorch's default init).\"\"\"
        nn.init.normal_(self.out_proj.weight, std=out_std)  # a residual output projection (GPT-2)

    def new_state(self) -> ConvState:
        return ConvState()

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                state: ConvState | None = None) -> MixerResult:
        b, t, d = x.shape
        value, gate = self.in_proj(x).chunk(2, dim=-1)  # (B, T, C) each
        if attention_mask is not None:  # (B, S) over decoded + new positions: padding feeds nothing forward
            value = value * attention_mask[:, -t:, None].to(value.dtype)
        past = state.window if state is not None else None
        if past is None:  # a full forward, or the first decoding step: nothing before position 0
            past = value.new_zeros(b, self.kernel_size - 1, d)
        seq = torch.cat([past, value], dim=1)  # (B, K-1+T, C): output t sees inputs t-K+1 .. t, never a later one
        if state is not None:
            state.window = seq[:, seq.shape[1] - (self.kernel_size - 1):]  # the last K - 1 inputs
        y = self.conv(seq.transpose(1, 2)).transpose(1, 2)  # (B, T, C)
        g = torch.sigmoid(gate)
        return MixerResult(self.out_proj(g * y), None, self._stats(g))

    @torch.no_grad()
    def _stats(self, g: torch.Tensor) -> dict[str, torch.Tensor]:
        w = self.conv.weight.detach().abs().float()  # (C, 1, K): tap K-1 weighs the current token
        return {
            "gate": g.detach().float().mean(),  # share of the convolution let through (about 0.5 at init)
            "past_share": w[..., :-1].sum() / w.sum().clamp(min=1e-12),  # filter mass on earlier tokens: reach
        }


def build(ctx: LayerContext) -> __CLASS__Mixer:
    options = validate_config(__CLASS__Options, ctx.options or {}, owner="mixer_options.__NAME__")
    return __CLASS__Mixer(ctx.config.d_model, options.kernel_size, bias=ctx.config.bias)


SPEC = MixerSpec(
    name="__NAME__",  # model.mixer=__NAME__, model.layers=[..., __NAME__]; must equal the entry-point name
    role="token",
    family="__NAME__",  # metric prefix: __NAME__/<metric>/layer<i>
    description="__NAME__: gated causal depthwise convolution (edit me), O(1) decode state",
    build=build,
    carries="recurrent",  # an O(1) decode state (a KV cache would be "kv")
    metrics=mixer_metrics,
)
'''

METRICS = '''\
\"\"\"Metrics of the __NAME__ plugin. Each is a torchmetrics Metric whose update(stats) reads the model's `stats`;
archlab logs compute() after every validation under the metric's name, as given (dict results as `<name>/<key>`).

The stack gives each mixer family's own stats as `<family>_<key>`, one row per layer of that family: the mixer's
`gate` is `stats["__NAME___gate"]`. Shared statistics (`resid/rms`, `attn/...`) are logged by the core.\"\"\"
from __future__ import annotations

from torchmetrics import Metric

from framework.metrics import LayerIdMean
from framework.stack import StackConfig


def mixer_metrics(cfg: StackConfig, layer_ids: list[int]) -> dict[str, Metric]:
    \"\"\"The __NAME__ family's metrics, for the layers using the mixer (in any stack: this plugin's or gpt's).\"\"\"
    return {
        # Mean sigmoid gate of each __NAME__ layer: how much of the convolution reaches the residual stream.
        "__NAME__/gate": LayerIdMean("__NAME___gate", layer_ids),
        # Share of each filter's mass on earlier tokens (0: the layer ignores the context).
        "__NAME__/past_share": LayerIdMean("__NAME___past_share", layer_ids),
    }
'''

YAML = '''\
# model=__NAME__: the decoder stack (framework.stack.StackConfig; its defaults are model/__NAME___defaults)
# with the __NAME__ token mixer in every layer. Every stack option is a model.<key> override (model.ffn=swiglu);
# the mixer's options are +model.mixer_options.__NAME__.<key>=... (__PACKAGE__/mixer.py: kernel_size).
defaults:
  - __NAME___defaults
  - _self_

mixer: __NAME__
'''

PRESET = '''\
# model=__NAME___hybrid: a preset of the __NAME__ plugin, __NAME__ and dense attention layers alternating
# (the list repeats to n_layers). It inherits model/__NAME__.yaml and overrides what it changes.
defaults:
  - __NAME__
  - _self_

layers: [__NAME__, attention]
'''

TESTS = '''\
\"\"\"The __NAME__ plugin's tests: archlab's contract kit (one test per property the framework relies on) on the
plugin and its preset, then the mixer's own. Run with `pytest` in the plugin's folder, after `pip install -e .`.\"\"\"
import pytest
import torch

from framework import build_model
from framework.testing import parametrize_with_checks

torch.set_num_threads(1)  # tiny tensors: extra threads only contend


@parametrize_with_checks("__NAME__")
def test_contract(contract_check):
    contract_check()


@parametrize_with_checks("__NAME__", model="__NAME___hybrid")
def test_preset_contract(contract_check):
    contract_check()


def _model(**overrides):
    sizes = dict(vocab_size=16, d_model=16, n_heads=2, n_layers=2, mixer="__NAME__")
    return build_model("__NAME__", **{**sizes, **overrides})


@pytest.mark.parametrize("kernel_size", [1, 2, 5])
@pytest.mark.parametrize("layers", [None, ["__NAME__", "attention"]])
def test_decoding_with_the_state_equals_a_full_forward(kernel_size, layers):
    torch.manual_seed(0)
    model = _model(layers=layers, mixer_options={"__NAME__": {"kernel_size": kernel_size}}).eval()
    ids = torch.randint(0, 16, (2, 9))
    with torch.no_grad():
        full = model(ids).logits
        state = model.new_state()
        steps = [model(ids[:, :3], state=state).logits]  # a prompt, then one token at a time
        steps += [model(ids[:, i : i + 1], state=state).logits for i in range(3, ids.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-5)


def test_the_mixer_reports_its_statistics():
    stats = _model()(torch.randint(0, 16, (2, 7))).stats
    assert stats["__NAME___gate"].shape == (2,)  # one value per __NAME__ layer
    assert ((stats["__NAME___gate"] > 0) & (stats["__NAME___gate"] < 1)).all()
    assert "resid/rms" in stats  # the stack's shared statistics come for free


def test_the_mixer_is_a_layer_kind_of_every_stack():
    model = build_model("decoder", layers=["attention", "__NAME__"], n_layers=2, vocab_size=16, d_model=16, n_heads=2)
    assert type(model.blocks[1].mixer).__name__ == "__CLASS__Mixer"


def test_bad_option_is_rejected_naming_the_field():
    with pytest.raises(ValueError, match="kernel_size"):
        _model(mixer_options={"__NAME__": {"kernel_size": 0}})
'''


_PLACEHOLDER = re.compile("__(NAME|PACKAGE|DIST|CLASS)__")


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
        f"{package}/mixer.py": MIXER,
        f"{package}/metrics.py": METRICS,
        f"{package}/conf/__init__.py": "",
        f"{package}/conf/model/{name}.yaml": YAML,
        f"{package}/conf/model/{name}_hybrid.yaml": PRESET,
        f"tests/test_{name}.py": TESTS,
    }
    return {path: _PLACEHOLDER.sub(lambda m: values[m.group()], text) for path, text in layout.items()}


def preset_names(name: str) -> list[str]:
    """The ``model=`` options a new plugin ``name`` adds (its own and its presets)."""
    return [name, f"{name}_hybrid"]
