"""The contract properties, one function each: ``check(subject)`` returns quietly, raises
``ContractViolation`` naming what broke, or ``CheckSkipped`` when it does not apply to this plugin."""
from __future__ import annotations

from typing import Callable

from ..subject import Subject
from . import config, forward, generation, training

Check = Callable[[Subject], None]

# Every property, in the order the kit runs them; objective-specific ones name the objectives they apply to.
CHECKS: dict[str, tuple[Check, tuple[str, ...] | None]] = {
    "config_schema": (config.check_config_schema, None),
    "builds_from_yaml": (config.check_builds_from_yaml, None),
    "forward_contract": (forward.check_forward_contract, None),
    "aux_loss": (forward.check_aux_loss, None),
    "causality": (forward.check_causality, ("causal_lm",)),
    "bidirectional": (forward.check_bidirectional, ("masked_lm",)),
    "decoder_causality": (forward.check_decoder_causality, ("seq2seq",)),
    "encoder_visibility": (forward.check_encoder_visibility, ("seq2seq",)),
    "encoder_independence": (forward.check_encoder_independence, ("seq2seq",)),
    "padding_invariance": (forward.check_padding_invariance, None),
    "predict_mask": (forward.check_predict_mask, ("masked_lm",)),
    "gradient_flow": (training.check_gradient_flow, None),
    "metrics": (training.check_metrics, None),
    "checkpoint_roundtrip": (training.check_checkpoint_roundtrip, None),
    "learns": (training.check_learns, None),
    "generate": (generation.check_generate, None),
}


def checks_for(objective: str) -> list[str]:
    """Names of the checks that apply to a plugin with this objective."""
    return [name for name, (_, objectives) in CHECKS.items() if objectives is None or objective in objectives]


def describe(name: str) -> str:
    """The property a check verifies, from its docstring (for docs and reports)."""
    doc = CHECKS[name][0].__doc__ or ""
    return " ".join(doc.split())
