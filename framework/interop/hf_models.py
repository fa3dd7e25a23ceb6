"""What export and import share: finding the architecture, moving weights into a model exactly, and checking that
the two models compute the same logits on a probe batch (so a mapping that renames right but means something else
cannot write a silently wrong model)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from framework.config_schema import ConfigError
from framework.plugin import Plugin

from .architecture import HFArchitecture, StateDict

PROBE_TOLERANCE = 1e-4  # max |logit difference| / max |logit| on the probe batch, in fp32


def require_transformers(field: str) -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"{field}: Hugging Face folders need the transformers package: pip install 'archlab[hf]' "
                          "(or pip install transformers)") from None
    # its per-file progress bars and kernel-fallback notices are not about this command's result
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    return transformers


def architecture_for(plugin: Plugin, config: Any) -> tuple[HFArchitecture, Any]:
    """The first of the plugin's Hugging Face architectures whose config mapping accepts ``config``, and the
    ``transformers`` config it gives; none: a ConfigError with every architecture's reason."""
    if not plugin.hf_architectures:
        raise ConfigError(f"format=hf: the {plugin.name!r} plugin's models have no Hugging Face counterpart (it "
                          "declares no hf_architectures); format=safetensors exports the bare weights")
    reasons = []
    for arch in plugin.hf_architectures:
        try:
            hf_config = arch.to_hf_config(config)
        except ValueError as err:  # NotConvertible, or a mapping's own ValueError
            reasons.append(f"  {arch.model_type}: {err}")
            continue
        if hf_config.model_type == arch.model_type:  # one mapping may serve two (Mamba, Mamba-2)
            return arch, hf_config
        reasons.append(f"  {arch.model_type}: this is a {hf_config.model_type} model")
    names = ", ".join(a.model_type for a in plugin.hf_architectures)
    raise ConfigError(f"format=hf: no Hugging Face architecture ({names}) expresses this {plugin.name} model; "
                      "format=safetensors exports the bare weights. Why each refused:\n" + "\n".join(reasons))


def load_exactly(model: nn.Module, state: StateDict, what: str) -> None:
    """Every weight of ``model`` is set from ``state`` and nothing is left over; a key ``state`` lacks is fine only
    when its tensor is tied to one that was set (an embedding-tied head)."""
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} for {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    loaded = {own[k].data_ptr() for k in own if k in state}
    missing = sorted(k for k in own if k not in state and own[k].data_ptr() not in loaded)
    if unexpected or missing or shapes:
        raise ConfigError(f"{what}: the weights do not map (missing {missing[:4]}, unexpected {unexpected[:4]}, "
                          f"shapes {shapes[:4]})")
    model.load_state_dict({k: v.detach().to(own[k].dtype) for k, v in state.items()}, strict=False)


def probe_inputs(objective: str, vocab_size: int, max_len: int, pad_id: int | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    length = max(2, min(12, max_len))
    low = 0 if pad_id is None else min(pad_id + 1, vocab_size - 1)  # keep padding ids out of a seq2seq probe
    ids = torch.randint(low, vocab_size, (2, length), generator=g)
    if objective == "seq2seq":
        return {"input_ids": ids, "decoder_input_ids": torch.randint(low, vocab_size, (2, length), generator=g)}
    return {"input_ids": ids}


@torch.no_grad()
def logit_difference(ours: nn.Module, hf: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """max |ours - hf| / max |hf| over the probe batch's logits."""
    ours_logits = ours(**inputs).logits.float()
    hf_logits = hf(**inputs).logits.float()
    return float((ours_logits - hf_logits).abs().max() / hf_logits.abs().max().clamp_min(1e-6))


def check_same_function(ours: nn.Module, hf: nn.Module, objective: str, vocab_size: int, max_len: int,
                        what: str, pad_id: int | None = None) -> float:
    difference = logit_difference(ours.eval(), hf.eval(), probe_inputs(objective, vocab_size, max_len, pad_id))
    if not difference <= PROBE_TOLERANCE:
        raise ConfigError(f"{what}: the converted model computes different logits (relative difference "
                          f"{difference:.2e} > {PROBE_TOLERANCE:.0e} on a probe batch): the mapping does not "
                          "express this model exactly; nothing was written")
    return difference
