"""The plugin under test: its composed YAML config (shrunk to test size), fresh models, inputs per objective."""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

import torch
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin
from torch import nn

from ..config_schema import ConfigError, validate_config
from ..output import ModelOutput
from ..plugin import Plugin
from ..registry import discover

# The composed data config: a tiny synthetic copy task, so vocab_size/max_seq_len interpolate to small values.
DATA: dict[str, Any] = {"task": "copy", "vocab_size": 18, "seq_len": 16, "length": 6, "n_train": 64, "n_val": 16,
                        "batch_size": 8}
DATA_OVERRIDES = tuple(f"data.{k}={v}" for k, v in DATA.items())
# The data group whose batches the objective trains on; the synthetic one is the fallback for every objective.
DATA_GROUPS: dict[str, tuple[str, ...]] = {"seq2seq": ("seq2seq", "synthetic")}
# Shared config keys shrunk when the plugin's schema has them (kept only if the config still validates).
SHRINK: dict[str, Any] = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "dropout": 0.0}
_LAYER_COUNT = re.compile(r"^n_\w*layers$")  # n_encoder_layers, n_decoder_layers, ... -> at most 2

# Config packages of plugin objects that are not registered through an entry point (test fixtures).
_EXTRA_CONFIG_PACKAGES: list[str] = []


class _KitSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for package in _EXTRA_CONFIG_PACKAGES:
            search_path.append(provider="archlab-contract-kit", path=f"pkg://{package}")


def resolve_plugin(plugin: str | Plugin) -> Plugin:
    """A name is looked up through entry-point discovery; a ``Plugin`` object is used as is."""
    if isinstance(plugin, Plugin):
        return plugin
    found = discover()
    if plugin in found.plugins:
        return found.plugins[plugin]
    if plugin in found.errors:
        raise LookupError(f"plugin {plugin!r} is installed but does not load: {found.errors[plugin]}")
    raise LookupError(f"no plugin named {plugin!r} is installed (pip install -e <its folder> registers its entry "
                      f"point); installed: {', '.join(sorted(found.plugins)) or '(none)'}")


@lru_cache(maxsize=64)
def compose_model_config(plugin: Plugin, option: str) -> tuple[dict, dict]:
    """(resolved ``model`` dict, resolved ``data`` dict) from the real ``conf/`` tree with ``model=<option>``,
    composed once per (plugin, option) per process (callers use ``composed``, which copies)."""
    from hydra import compose, initialize_config_module
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from ..hydra_search_path import defaults_node, register_search_path

    register_search_path()
    if discover().plugins.get(plugin.name) is not plugin:  # not installed: its YAMLs and defaults node by hand
        if plugin.config_package:
            if plugin.config_package not in _EXTRA_CONFIG_PACKAGES:
                _EXTRA_CONFIG_PACKAGES.append(plugin.config_package)
            Plugins.instance().register(_KitSearchPath)
        if dataclasses.is_dataclass(plugin.config_class):
            ConfigStore.instance().store(group="model", name=f"{plugin.name}_defaults", node=defaults_node(plugin),
                                         provider="archlab-contract-kit")
    with initialize_config_module(config_module="conf", version_base="1.3"):
        for group in DATA_GROUPS.get(plugin.objective, ("synthetic",)):
            overrides = [f"model={option}", f"data={group}", *DATA_OVERRIDES]
            try:
                cfg = compose(config_name="train", overrides=overrides)
                break
            except Exception:
                if group == "synthetic":
                    raise
    return OmegaConf.to_container(cfg.model, resolve=True), OmegaConf.to_container(cfg.data, resolve=True)


def shrink(config_class: type, values: dict[str, Any], owner: str) -> dict[str, Any]:
    """``values`` with each shared size key made small, one key at a time, keeping only what validates."""
    names = [f.name for f in dataclasses.fields(config_class)]
    candidates = {k: v for k, v in SHRINK.items() if k in names}
    candidates.update({n: 2 for n in names if _LAYER_COUNT.match(n) and n not in candidates
                       and isinstance(values.get(n), int) and values[n] > 2})
    if isinstance(values.get("n_kv_heads"), int):
        candidates["n_kv_heads"] = 1
    out = dict(values)
    for key, value in candidates.items():
        trial = {**out, key: value}
        try:
            validate_config(config_class, trial, owner=owner)
        except ConfigError:
            continue  # this plugin's rules forbid the small value together with the others: keep its own
        out = trial
    return out


@dataclass
class Subject:
    """Everything a check needs about one plugin (and one of its ``model=`` options)."""

    plugin: Plugin
    option: str  # model=<option>: the plugin's own YAML or one of its presets
    yaml_values: dict[str, Any]  # the composed model config minus ``plugin``, full size
    values: dict[str, Any]  # shrunk to test size (plus the caller's overrides)
    data: dict[str, Any]  # the composed data config (synthetic copy task)
    compose_error: str | None = None  # why model=<option> did not compose (the other checks use defaults)

    @property
    def name(self) -> str:
        return self.plugin.name

    @property
    def objective(self) -> str:
        return self.plugin.objective

    def config(self) -> Any:
        return validate_config(self.plugin.config_class, self.values, owner=f"model ({self.name})")

    @property
    def vocab_size(self) -> int:
        return int(self.values.get("vocab_size", self.data["vocab_size"]))

    @property
    def seq_len(self) -> int:
        return int(self.data["seq_len"])

    def build(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        model = self.plugin.build(self.config())
        if not isinstance(model, nn.Module):
            raise TypeError(f"build() returned a {type(model).__name__}, not a torch.nn.Module")
        return model

    def tokens(self, batch: int, length: int, seed: int) -> torch.Tensor:
        """(B, T) random ids, avoiding 0 (PAD) so a change of token is always a real change."""
        g = torch.Generator().manual_seed(seed)
        return torch.randint(1, self.vocab_size, (batch, length), generator=g)

    def inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               decoder_input_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Forward keyword arguments for this objective; seq2seq models also get ``decoder_input_ids``."""
        kwargs = {"input_ids": input_ids}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if self.objective == "seq2seq":
            if decoder_input_ids is None:
                decoder_input_ids = self.tokens(input_ids.shape[0], max(2, input_ids.shape[1] // 2), seed=99)
            kwargs["decoder_input_ids"] = decoder_input_ids
        return kwargs

    def forward(self, model: nn.Module, **inputs: torch.Tensor) -> ModelOutput:
        out = model(**inputs)
        if not isinstance(out, ModelOutput):
            raise TypeError(f"forward returned a {type(out).__name__}, not a framework.ModelOutput")
        return out

    def logits(self, model: nn.Module, **inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(model, **inputs).logits.float()


def composed(plugin: Plugin, option: str) -> tuple[dict, dict]:
    """Copies of ``compose_model_config``'s (model, data), the model's ``plugin:`` key checked and removed."""
    model, data = copy.deepcopy(compose_model_config(plugin, option))
    named = model.pop("plugin", None)
    if named != plugin.name:
        raise ConfigError(f"model={option}: its YAML says `plugin: {named}`, expected `plugin: {plugin.name}`")
    return model, data


def default_option(plugin: Plugin) -> str:
    """``model=<plugin name>`` when the plugin ships that YAML, else its generated ``<plugin>_defaults`` node
    (the config dataclass at its defaults)."""
    from importlib import resources

    if plugin.config_package:
        try:
            if not (resources.files(plugin.config_package) / "model" / f"{plugin.name}.yaml").is_file():
                return f"{plugin.name}_defaults"
        except ModuleNotFoundError:
            pass  # composing model=<name> reports it
    return plugin.name


def build_subject(plugin: str | Plugin, model: str | None = None, overrides: Mapping[str, Any] | None = None) -> Subject:
    """``model=<model>`` (default: ``default_option``) composed, validated at full size, shrunk, ``overrides``
    applied. If that fails, the config's defaults at test size (``compose_error`` says why), so the other checks
    still run."""
    p = resolve_plugin(plugin)
    option, owner = model or default_option(p), f"model ({p.name})"
    try:
        yaml_values, data = composed(p, option)
        validate_config(p.config_class, yaml_values, owner=owner)  # the full-size YAML must validate as written
        values = {**shrink(p.config_class, yaml_values, owner), **(overrides or {})}
        return Subject(plugin=p, option=option, yaml_values=yaml_values, values=values, data=data)
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
    data = {"_target_": "framework.data.SyntheticDataModule", **DATA}
    values = {}
    if dataclasses.is_dataclass(p.config_class):  # else config_schema reports it
        names = {f.name for f in dataclasses.fields(p.config_class)}
        sizes = {"vocab_size": DATA["vocab_size"], "max_seq_len": DATA["seq_len"]}
        values = shrink(p.config_class, {k: v for k, v in sizes.items() if k in names}, owner)
    values.update(overrides or {})
    return Subject(plugin=p, option=option, yaml_values=values, values=values, data=data, compose_error=error)
