"""Validate plain dicts (from YAML or keyword overrides) against a plugin's config dataclass.

Errors are ``ValueError``s that name the field and what is allowed, raised before anything is built.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Mapping, TypeVar, Union

T = TypeVar("T")


class ConfigError(ValueError):
    """A config field is unknown or holds a value it does not allow."""


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is dict:
        return "a mapping"
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(tp)[0])}" if typing.get_args(tp) else "a list"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` as type ``tp`` or raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            (item_tp, *_) = typing.get_args(tp) or (Any,)
            items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
            return origin(items)
    elif origin is dict:
        if isinstance(value, Mapping):
            key_tp, item_tp = typing.get_args(tp) or (Any, Any)
            return {_coerce(k, key_tp, where): _coerce(v, item_tp, f"{where}.{k}") for k, v in value.items()}
    elif dataclasses.is_dataclass(tp):  # nested config section, e.g. model.moe.n_experts
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return validate_config(tp, value, owner=where)
    else:
        if isinstance(value, tp):
            return value
    raise ConfigError(f"{where}: got {value!r}; allowed: {_describe(tp)}")


def validate_config(config_class: type[T], values: Mapping[str, Any], owner: str = "model") -> T:
    """Build ``config_class`` from ``values``: unknown keys and ill-typed values raise ``ConfigError``.

    The dataclass's own ``__post_init__`` then checks cross-field rules (e.g. d_model % n_heads); their
    errors read "<owner>: <field>: ...", or as they are when they already name "<owner>.<field>" (the data
    configs' rules: "data.length: ...").
    """
    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"{config_class!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(config_class) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{owner}: unknown field(s) {', '.join(unknown)}; allowed fields: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(config_class)
    coerced = {k: _coerce(v, hints[k], f"{owner}.{k}") for k, v in values.items()}
    try:
        return config_class(**coerced)
    except (ValueError, TypeError) as err:  # cross-field checks in __post_init__
        if isinstance(err, ConfigError) and str(err).startswith(f"{owner}."):
            raise ConfigError(str(err)) from None
        raise ConfigError(f"{owner}: {err}") from None


def check(condition: bool, field: str, message: str) -> None:
    """Cross-field rule helper for ``__post_init__``: raises ``ConfigError`` naming ``field``."""
    if not condition:
        raise ConfigError(f"{field}: {message}")
