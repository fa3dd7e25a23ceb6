"""The contract properties, one function each: ``check(subject)`` returns quietly, raises
``ContractViolation`` naming what broke, or ``CheckSkipped`` when it does not apply to this plugin."""
from __future__ import annotations

from typing import Callable

from ..subject import Subject
from .config import check_builds_from_yaml, check_config_schema
from .forward import (
    check_aux_loss,
    check_bidirectional,
    check_causality,
    check_decoder_causality,
    check_encoder_independence,
    check_encoder_visibility,
    check_forward_contract,
    check_padding_invariance,
    check_predict_mask,
)
from .generation import check_generate
from .training import check_checkpoint_roundtrip, check_gradient_flow, check_learns, check_metrics

Check = Callable[[Subject], None]

# Every property, in the order the kit runs them; objective-specific ones name the objectives they apply to.
CHECKS: dict[str, tuple[Check, tuple[str, ...] | None]] = {
    "config_schema": (check_config_schema, None),
    "builds_from_yaml": (check_builds_from_yaml, None),
    "forward_contract": (check_forward_contract, None),
    "aux_loss": (check_aux_loss, None),
    "causality": (check_causality, ("causal_lm",)),
    "bidirectional": (check_bidirectional, ("masked_lm",)),
    "decoder_causality": (check_decoder_causality, ("seq2seq",)),
    "encoder_visibility": (check_encoder_visibility, ("seq2seq",)),
    "encoder_independence": (check_encoder_independence, ("seq2seq",)),
    "padding_invariance": (check_padding_invariance, None),
    "predict_mask": (check_predict_mask, ("masked_lm",)),
    "gradient_flow": (check_gradient_flow, None),
    "metrics": (check_metrics, None),
    "checkpoint_roundtrip": (check_checkpoint_roundtrip, None),
    "learns": (check_learns, None),
    "generate": (check_generate, None),
}


def checks_for(objective: str) -> list[str]:
    """Names of the checks that apply to a plugin with this objective."""
    return [name for name, (_, objectives) in CHECKS.items() if objectives is None or objective in objectives]


def describe(name: str) -> str:
    """The property a check verifies, from its docstring (for docs and reports)."""
    doc = CHECKS[name][0].__doc__ or ""
    return " ".join(doc.split())
