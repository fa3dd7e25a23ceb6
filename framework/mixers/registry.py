"""Mixer discovery through the ``archlab.mixers`` entry-point group, done once; broken mixers are recorded."""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points

from .spec import ENTRY_POINT_GROUP, MixerSpec, Role


@dataclass(frozen=True)
class MixerDiscovery:
    mixers: dict[str, MixerSpec]
    errors: dict[str, str]  # entry-point name -> why it could not be loaded


@lru_cache(maxsize=1)
def discover_mixers() -> MixerDiscovery:
    mixers: dict[str, MixerSpec] = {}
    errors: dict[str, str] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            spec = ep.load()
        except Exception as err:  # a third-party mixer that fails to import must not break the others
            errors[ep.name] = f"failed to import {ep.value}: {traceback.format_exception_only(type(err), err)[-1].strip()}"
            continue
        if not isinstance(spec, MixerSpec):
            errors[ep.name] = f"{ep.value} is a {type(spec).__name__}, not a framework.mixers.MixerSpec"
        elif spec.name != ep.name:
            errors[ep.name] = f"entry point {ep.name!r} points at mixer named {spec.name!r}; they must match"
        else:
            mixers[spec.name] = spec
    return MixerDiscovery(mixers, errors)


def list_mixers(role: Role | None = None) -> dict[str, MixerSpec]:
    """Loaded mixers by name (of one role if given)."""
    return {n: s for n, s in discover_mixers().mixers.items() if role is None or s.role == role}


def get_mixer(name: str, role: Role, field: str) -> MixerSpec:
    """The spec of ``name``; an unknown name raises a ValueError naming ``field`` and the known mixers."""
    found = discover_mixers()
    spec = found.mixers.get(name)
    if spec is not None and spec.role == role:
        return spec
    if name in found.errors:
        raise ValueError(f"{field}: mixer {name!r} is installed but broken: {found.errors[name]}")
    known = ", ".join(repr(n) for n in sorted(list_mixers(role)))
    other = " (it is a channel mixer)" if role == "token" and spec else " (it is a token mixer)" if spec else ""
    raise ValueError(f"{field}: unknown {role} mixer {name!r}{other}; known {role} mixers: {known}")
