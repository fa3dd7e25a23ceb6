"""Config properties: the schema rejects bad values; model=<option> composes, validates and builds."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from ...config_schema import ConfigError, _coerce, validate_config
from ..subject import Subject
from .common import fail


# Shared keys whose meaning (and so whose invalid values) every plugin agrees on.
OUT_OF_RANGE: dict[str, tuple[Any, ...]] = {
    "vocab_size": (0,), "d_model": (0,), "n_layers": (0,), "n_heads": (0,), "max_seq_len": (0,), "dropout": (1.5, -0.1),
}


# Values of the wrong type for nearly every annotation: each typed field must reject at least one of them.
ILL_TYPED: tuple[Any, ...] = ("__not_a_valid_value__", 12345, {"__not_a_field__": 1}, [["not", "a", "value"]])


def check_config_schema(s: Subject) -> None:
    """Defaults validate; an unknown key, an ill-typed value of every field and out-of-range shared keys raise ConfigError."""
    cls = s.plugin.config_class
    if not dataclasses.is_dataclass(cls):
        fail(f"config_class {cls!r} is not a dataclass")
    owner = f"model ({s.name})"
    try:
        validate_config(cls, {}, owner=owner)
    except Exception as err:
        fail(f"the config's defaults do not validate: {err}")
    try:
        validate_config(cls, {**s.values, "no_such_field_xyz": 1}, owner=owner)
        fail("an unknown key (no_such_field_xyz) was accepted")
    except ConfigError as err:
        if "no_such_field_xyz" not in str(err):
            fail(f"the error for an unknown key does not name it: {err}")
    hints, fields = typing.get_type_hints(cls), dataclasses.fields(cls)
    problems: list[str | None] = []  # None: that bad value was rejected as it should be
    for f in fields:
        if not f.init:
            continue
        ill_typed = [bad for bad in ILL_TYPED if not _type_accepts(hints.get(f.name, Any), bad)]
        if not ill_typed:
            problems.append(f"{f.name} accepts values of any type (typed {hints.get(f.name, Any)!r}; give it a real type)")
        problems += [_rejection_problem(cls, s.values, f.name, bad, owner, "ill-typed") for bad in ill_typed]
    names = {f.name for f in fields}
    problems += [_rejection_problem(cls, s.values, name, bad, owner, "out-of-range")
                 for name, bad_values in OUT_OF_RANGE.items() if name in names for bad in bad_values]
    if any(problems):
        fail("; ".join(p for p in problems if p))


def _type_accepts(tp: Any, value: Any) -> bool:
    """Whether archlab's type check lets ``value`` through for annotation ``tp`` (before __post_init__)."""
    try:
        _coerce(value, tp, "probe")
    except Exception:  # a ConfigError, or e.g. a nested dataclass whose own __post_init__ fails on the probe
        return False
    return True


def _rejection_problem(cls: type, values: dict, field: str, bad: Any, owner: str, kind: str) -> str | None:
    """What is wrong with how the config treats ``field=bad`` (None: rejected with a ConfigError naming it)."""
    try:
        validate_config(cls, {**values, field: bad}, owner=owner)
    except ConfigError as err:
        return None if field in str(err) else f"the error for {field}={bad!r} does not name the field: {err}"
    except Exception as err:  # a crash inside __post_init__ instead of a ConfigError
        return (f"{field}={bad!r} raised {type(err).__name__} ({err}) instead of ConfigError; "
                "validate with framework.config_schema.check")
    return f"{kind} value {field}={bad!r} was accepted"


def check_builds_from_yaml(s: Subject) -> None:
    """model=<option> composes with Hydra, its full-size YAML validates, the shrunk model builds; presets validate too."""
    from ...hydra_search_path import model_options
    from ..subject import composed

    if s.compose_error:
        fail(f"model={s.option} does not compose: {s.compose_error}")
    try:
        validate_config(s.plugin.config_class, s.yaml_values, owner=f"model ({s.name})")
    except ConfigError as err:
        fail(f"model={s.option}.yaml does not validate against {s.plugin.config_class.__name__}: {err}")
    s.build()
    if s.option != s.name:
        return  # a preset under test: the plugin's own run validates every preset
    for preset in sorted(o for o, p in model_options().items() if p == s.name and o != s.name):
        try:
            model = composed(s.plugin, preset)[0]  # which also checks the preset's `plugin:` key
            validate_config(s.plugin.config_class, model, owner=f"model ({s.name}, preset {preset})")
        except Exception as err:
            fail(f"preset model={preset} does not compose or validate: {err}")
