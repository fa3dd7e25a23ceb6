"""What ``archlab plugins -v`` shows of a plugin: its config fields (type, default, allowed values) and what each
preset changes, one line per field, nested config sections flattened to dotted names (``moe.n_experts``)."""
from __future__ import annotations

import dataclasses
import types
import typing
from importlib import resources
from typing import Any, Literal, Union

import yaml

# Fields whose default the generated Hydra node replaces by the data's (framework.hydra_search_path.defaults_node).
FOLLOWS_DATA = {"vocab_size": "data.vocab_size", "max_seq_len": "data.seq_len"}


def type_text(tp: Any) -> str:
    """A field's type as a user types its values: ``layernorm|rmsnorm|none``, ``int|null``, ``list[str]``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "|".join(value_text(a) for a in args)
    if origin in (Union, types.UnionType):
        return "|".join(type_text(a) for a in args)
    if tp is type(None):
        return "null"
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(type_text(a) for a in args)}]" if args else origin.__name__
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def value_text(value: Any) -> str:
    """A default as it reads in a Hydra override: null, true, [a, b], a bare string."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def field_rows(config: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, type, default) of every field of the config dataclass instance ``config``; a field holding a
    dataclass becomes its own fields' rows, with the defaults this config gives them."""
    hints = typing.get_type_hints(type(config))
    rows: list[tuple[str, str, str]] = []
    for f in dataclasses.fields(config):
        if not f.init:
            continue
        name, value = prefix + f.name, getattr(config, f.name)
        if dataclasses.is_dataclass(value) and dataclasses.is_dataclass(hints[f.name]):
            rows += field_rows(value, prefix=f"{name}.")
            continue
        default = value_text(value)
        if name in FOLLOWS_DATA:
            default += f" (follows {FOLLOWS_DATA[name]})"
        rows.append((name, type_text(hints[f.name]), default))
    return rows


def preset_changes(config_package: str, option: str) -> str:
    """``model/<option>.yaml`` in one line: the preset it builds on (if another) and the fields it sets."""
    node = yaml.safe_load((resources.files(config_package) / "model" / f"{option}.yaml").read_text()) or {}
    based_on = " + ".join(f"model={d}" for d in node.pop("defaults", [])
                          if isinstance(d, str) and d != "_self_" and not d.endswith("_defaults"))
    settings = " ".join(f"{k}={value_text(v)}" for k, v in _flatten(node))
    if based_on and settings:
        return f"{based_on} + {settings}"
    return based_on or settings or "(the defaults)"


def _flatten(node: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in node.items():
        if isinstance(value, dict) and value:
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items
