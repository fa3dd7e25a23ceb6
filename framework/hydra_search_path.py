"""Adds each discovered plugin's config package to Hydra's search path (so `model=<name>` exists).

Registered explicitly with ``register_search_path()`` before ``@hydra.main`` and in tests: Hydra's own
``hydra_plugins`` namespace scan is not relied upon (it fails under some editable installs).
"""
from __future__ import annotations

import dataclasses
from importlib import resources
from typing import Any

from hydra.core.config_store import ConfigStore

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

from .plugin import Plugin
from .registry import list_plugins


class ArchlabSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for name, plugin in sorted(list_plugins().items()):
            if plugin.config_package:
                search_path.append(provider=f"archlab-plugin-{name}", path=f"pkg://{plugin.config_package}")


def defaults_node(plugin: Plugin) -> dict[str, Any]:
    """The Hydra node ``model/<plugin>_defaults``: ``plugin: <name>`` plus every field of the plugin's config
    dataclass at its default (the one place a default lives); ``vocab_size`` and ``max_seq_len`` follow the
    data config. Presets list it in their defaults and hold only what they change."""
    node: dict[str, Any] = {"plugin": plugin.name, **dataclasses.asdict(plugin.config_class())}
    for key, data_key in (("vocab_size", "data.vocab_size"), ("max_seq_len", "data.seq_len")):
        if key in node:
            node[key] = "${" + data_key + "}"
    return node


def register_search_path() -> None:
    Plugins.instance().register(ArchlabSearchPathPlugin)
    store = ConfigStore.instance()
    for name, plugin in sorted(list_plugins().items()):
        if dataclasses.is_dataclass(plugin.config_class):
            store.store(group="model", name=f"{name}_defaults", node=defaults_node(plugin), provider="archlab")


def model_options() -> dict[str, str]:
    """``model=<option>`` names offered by the plugins' config packages -> the plugin offering each."""
    options: dict[str, str] = {}
    for name, plugin in sorted(list_plugins().items()):
        if not plugin.config_package:
            continue
        folder = resources.files(plugin.config_package) / "model"
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name.endswith(".yaml"):
                    options[entry.name.removesuffix(".yaml")] = name
    return options
