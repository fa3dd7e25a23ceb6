"""What a plugin declares for each Hugging Face architecture it maps to and from.

A mapping is four functions: the two config directions and the two state-dict directions. Each config direction
raises ``NotConvertible`` with the reason when a config has no counterpart (a sparse attention kind has no Hugging
Face GPT-2, a Jamba checkpoint's dt/B/C norms have no archlab mamba mixer), so export and import refuse with that
reason instead of writing a model that computes something else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

import torch

StateDict = dict[str, torch.Tensor]
AutoClass = Literal["AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSeq2SeqLM"]


class NotConvertible(ValueError):
    """A config (ours or Hugging Face's) that the other side cannot express exactly; the message says why."""


@dataclass(frozen=True)
class HFArchitecture:
    """One Hugging Face architecture a plugin converts to and from.

    model_type:  ``config.json``'s ``model_type`` (``gpt2``, ``llama``, ``mixtral``, ``bert``, ``t5``, ...).
    auto_class:  the ``transformers`` Auto class that loads the exported folder.
    to_hf_config:  ``(our config) -> transformers.PretrainedConfig``; NotConvertible when it has no counterpart.
    from_hf_config:  ``(hf config, max_seq_len or None) -> our config values`` (keyword arguments of the plugin's
                 config class); NotConvertible when ours cannot express it. ``max_seq_len`` matters where Hugging
                 Face has no position table to read it from (Mamba, Jamba).
    to_hf_state:  ``(our state dict, our config, hf template) -> hf state dict``; the template is the state dict
                 of a freshly built Hugging Face model (its keys and shapes), which rename-only mappings invert.
    from_hf_state:  ``(hf state dict, hf config, our config) -> our state dict``.
    """

    model_type: str
    auto_class: AutoClass
    to_hf_config: Callable[[Any], Any]
    from_hf_config: Callable[[Any, int | None], dict[str, Any]]
    to_hf_state: Callable[[StateDict, Any, StateDict], StateDict]
    from_hf_state: Callable[[StateDict, Any, Any], StateDict]


def renames(from_hf: Callable[[StateDict], StateDict], hf_keys: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """{our key: hf key} of a state-dict mapping that only renames (BERT, T5, Llama): run ``from_hf`` on distinct
    placeholder tensors and see which one each of our keys received, so one hand-written direction gives both and
    they cannot drift apart. A key that received a derived tensor (a transpose, a chunk) is an error: that
    mapping needs its inverse written out."""
    placeholders = {k: torch.empty(0) for k in hf_keys}
    origin = {id(v): k for k, v in placeholders.items()}
    out = {}
    for ours, value in from_hf(placeholders).items():
        if id(value) not in origin:
            raise ValueError(f"{ours}: not a plain rename of a Hugging Face weight; write the inverse mapping")
        out[ours] = origin[id(value)]
    return out


def invert(from_hf: Callable[[StateDict], StateDict], hf_keys: Mapping[str, torch.Tensor],
           ours: StateDict) -> StateDict:
    """Our state dict -> Hugging Face's, for a rename-only ``from_hf`` (see ``renames``). Tied weights: the first of
    our keys naming an HF key wins (they hold the same tensor)."""
    hf: StateDict = {}
    for our_key, hf_key in renames(from_hf, hf_keys).items():
        hf.setdefault(hf_key, ours[our_key])
    return hf
