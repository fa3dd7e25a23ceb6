"""``key=value`` arguments of the commands that are not Hydra apps (generate, eval, quantize): typed fields,
plus ``group=<option>`` and ``group.field=value`` for a config group of ``conf/`` (data, quantization)."""
from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from framework.config_schema import ConfigError


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(value)


_bool.__name__ = "bool (true/false)"


def parse_options(argv: list[str], fields: dict[str, Any], groups: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """(typed fields, {group: {"option": name or None, "overrides": {field: value}}})."""
    args: dict[str, Any] = {}
    chosen: dict[str, dict[str, Any]] = {g: {"option": None, "overrides": {}} for g in groups}
    allowed = ", ".join([*fields, *[f"{g}=<option>, {g}.<field>" for g in groups]])
    for item in argv:
        key, sep, value = item.partition("=")
        group, _, field = key.partition(".")
        if sep and key in groups:
            chosen[key]["option"] = value
        elif sep and group in groups and field:
            chosen[group]["overrides"][field] = yaml.safe_load(value) if value else None
        elif sep and key in fields:
            kind = bool if fields[key] is bool else fields[key]
            try:
                args[key] = _bool(value) if kind is bool else kind(value)
            except ValueError:
                name = "true or false" if kind is bool else kind.__name__
                raise ConfigError(f"{key}: {value!r} is not a valid {name}") from None
        else:
            raise ConfigError(f"{item!r}: expected key=value with key in {allowed}")
    return args, chosen


def group_options(group: str) -> list[str]:
    """The options of config group ``group`` shipped in ``conf/`` (the YAML files' names)."""
    folder = resources.files("conf") / group
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_group_option(group: str, option: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``conf/<group>/<option>.yaml`` as a dict, with ``overrides`` applied; an unknown option lists the known."""
    known = group_options(group)
    if option not in known:
        raise ConfigError(f"{group}: {option!r} is not one of {', '.join(known)} (conf/{group}/)")
    text = (resources.files("conf") / group / f"{option}.yaml").read_text()
    values = yaml.safe_load(text) or {}
    values.pop("defaults", None)
    return {**values, **(overrides or {})}
