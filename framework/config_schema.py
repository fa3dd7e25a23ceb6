"""Validate plain dicts (from YAML or keyword overrides) against a plugin's config dataclass.

Errors are ``ValueError``s that name the field and what is allowed, raised before anything is built.
"""
from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Collection
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


def check_call_values(section: str, target: Callable[..., Any], values: Mapping[str, Any],
                      skip: Collection[str] = ()) -> None:
    """Keyword values a config node passes to ``target`` (the class or function it instantiates), checked against
    its signature before the call: unknown names (unless it takes ``**kwargs``), and values of another type than
    the parameter's default (a number for a number, a bool for a bool, a list as long as a tuple default)."""
    params = inspect.signature(target).parameters
    hints = _type_hints(target)
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    name = getattr(target, "__qualname__", repr(target))
    for key, value in values.items():
        if key.startswith("_") or key in skip:
            continue
        if key not in params:
            check(takes_any, f"{section}.{key}", f"{name} takes no argument {key!r}; it takes: "
                  + ", ".join(k for k, p in params.items() if k not in skip and p.kind != p.VAR_POSITIONAL))
            continue
        problem = _annotation_problem(value, hints[key]) if key in hints else \
            _type_problem(value, params[key].default)
        check(problem is None, f"{section}.{key}", f"{problem} ({name} takes {params[key]})")


def _type_hints(target: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to the defaults alone
        return {}


def _annotation_problem(value: Any, tp: Any) -> str | None:
    """Why ``value`` cannot be an argument annotated ``tp``, or None: the plain types a config can hold are
    checked (bool, int, float, str, lists, Literal values); other types (a Tensor, a class) are accepted from a
    nested config node only."""
    if value is None:
        return None
    options = [a for a in (typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,))
               if a is not type(None)]
    plain = []
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is Literal:
            if value in typing.get_args(option):
                return None
            plain.append(" or ".join(repr(v) for v in typing.get_args(option)))
        elif origin is tuple and typing.get_args(option) and Ellipsis not in typing.get_args(option):
            n = len(typing.get_args(option))
            if isinstance(value, (list, tuple)) and len(value) == n:
                return None
            plain.append(f"a list of {n} values")
        elif origin in (bool, int, float, str, list, tuple):
            if _type_problem(value, {bool: False, int: 0, float: 0.0, str: "", list: [], tuple: []}[origin]) is None:
                return None
            plain.append({bool: "true/false", int: "an integer", float: "a number", str: "a string",
                          list: "a list", tuple: "a list"}[origin])
        elif origin is Any:
            return None
    if len(plain) < len(options) and isinstance(value, dict):  # e.g. {_target_: ...} for a class-typed argument
        return None
    return f"must be {' or '.join(plain) or 'a value of its type'}, got {value!r}" if plain else None


def _type_problem(value: Any, default: Any) -> str | None:
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else f"must be an integer, got {value!r}"
    if isinstance(default, float):
        return None if number(value) else f"must be a number, got {value!r}"
    if isinstance(default, str):
        return None if isinstance(value, str) else f"must be a string, got {value!r}"
    if isinstance(default, list):
        return None if isinstance(value, (list, tuple)) else f"must be a list, got {value!r}"
    if isinstance(default, tuple) and not default:
        return None if isinstance(value, (list, tuple)) else f"must be a list, got {value!r}"
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            return f"must be a list of {len(default)} values like {list(default)}, got {value!r}"
        bad = [v for v, d in zip(value, default) if _type_problem(v, d)]
        return f"must be a list of numbers like {list(default)}, got {value!r}" if bad else None
    return None
