"""The one error type the data layer raises for bad settings, and the field checks that raise it."""
from __future__ import annotations

from typing import Any, Sequence


# Batch formats a datamodule can build; each module accepts the subset it supports.
OBJECTIVES: tuple[str, ...] = ("causal_lm", "masked_lm", "seq2seq")


class DataConfigError(ValueError):
    """A ``data.*`` setting is invalid; the message names the field and what is allowed."""


def check_int(field: str, value: Any, minimum: int | None = None) -> int:
    """Return ``value`` if it is an int (not bool) >= ``minimum``, else raise naming ``data.<field>``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataConfigError(f"data.{field} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise DataConfigError(f"data.{field} must be >= {minimum}, got {value}")
    return value


def check_optional_int(field: str, value: Any, minimum: int) -> int | None:
    """Like ``check_int`` but ``None`` is allowed (meaning: no limit)."""
    return None if value is None else check_int(field, value, minimum)


def check_choice(field: str, value: Any, allowed: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise listing them."""
    if value not in allowed:
        raise DataConfigError(f"data.{field} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value
