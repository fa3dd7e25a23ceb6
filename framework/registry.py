"""Plugin discovery through the ``archlab.plugins`` entry-point group, done once and explicitly.

A plugin that fails to load is recorded with its error instead of breaking the others.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from torch import nn

from .config_schema import validate_config
from .plugin import ENTRY_POINT_GROUP, Plugin


@dataclass(frozen=True)
class Discovery:
    plugins: dict[str, Plugin]
    errors: dict[str, str]  # entry-point name -> why it could not be loaded
    sources: dict[str, str]  # plugin name -> "distribution version"


@lru_cache(maxsize=1)
def discover() -> Discovery:
    plugins: dict[str, Plugin] = {}
    errors: dict[str, str] = {}
    sources: dict[str, str] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            obj = ep.load()
        except Exception as err:  # any import-time failure of a third-party plugin
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            errors[ep.name] = f"failed to import {ep.value}: {last}"
            continue
        if not isinstance(obj, Plugin):
            errors[ep.name] = f"{ep.value} is a {type(obj).__name__}, not a framework.Plugin"
        elif obj.name != ep.name:
            errors[ep.name] = f"entry point {ep.name!r} points at plugin named {obj.name!r}; they must match"
        elif obj.name in plugins:
            errors[ep.name] = f"plugin name {obj.name!r} is registered twice"
        else:
            plugins[obj.name] = obj
            dist = getattr(ep, "dist", None)
            sources[obj.name] = f"{dist.name} {dist.version}" if dist else "?"
    return Discovery(plugins, errors, sources)


def refresh() -> Discovery:
    """Forget the cached discovery (after installing a plugin at run time), the mixers' too (a plugin package
    may register mixers in ``archlab.mixers``)."""
    from .mixers.registry import discover_mixers

    discover.cache_clear()
    discover_mixers.cache_clear()
    return discover()


def list_plugins() -> dict[str, Plugin]:
    """Loaded plugins by name. Broken ones are in ``plugin_errors()``."""
    return dict(discover().plugins)


def plugin_errors() -> dict[str, str]:
    return dict(discover().errors)


def get_plugin(name: str) -> Plugin:
    found = discover()
    if name in found.plugins:
        return found.plugins[name]
    if name in found.errors:
        raise ValueError(f"plugin {name!r} is installed but broken: {found.errors[name]}")
    successors = [p.name for p in found.plugins.values() if name in p.upgrades]
    if successors:  # a retired plugin name, e.g. from a checkpoint written before it was merged into another
        raise ValueError(f"plugin {name!r} is now part of plugin {successors[0]!r}: checkpoints of {name!r} load with "
                         f"archlab generate / framework.checkpoint.load_checkpoint; new runs use model=<preset> "
                         f"(archlab plugins lists them)")
    raise ValueError(f"unknown plugin {name!r}; available: {', '.join(sorted(found.plugins)) or '(none)'}")


def make_config(name: str, **overrides: Any) -> Any:
    """The validated config dataclass of plugin ``name``: defaults updated with ``overrides``."""
    plugin = get_plugin(name)
    return validate_config(plugin.config_class, overrides, owner=f"model ({name})")


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build plugin ``name``'s model; unknown or invalid overrides raise ``ValueError`` naming the field."""
    plugin = get_plugin(name)
    return plugin.build(make_config(name, **overrides))

