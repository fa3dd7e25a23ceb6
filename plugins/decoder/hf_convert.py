"""The pieces every Hugging Face converter of this plugin shares (``hf_gpt2``, ``hf_llama``, ``hf_mamba``,
``hf_jamba``, ``hf_recurrent_gemma``, ``hf_deepseek_v3``): loading a mapped state dict into a stack, the
fused-experts layout of HF's MoE blocks, and the layout checks of the config directions.

``archlab export format=hf`` / ``archlab import`` reach them through ``plugins/decoder/hf_architectures.py``.
"""
from __future__ import annotations

from typing import Any

import torch

from framework.interop import NotConvertible

StateDict = dict[str, torch.Tensor]


def load_stack(config_values: dict[str, Any], hf_model: torch.nn.Module, convert) -> Any:  # noqa: ANN001
    """A ``StackLM`` built from ``config_values`` holding ``convert(hf_state_dict_in_fp32, cfg)``; every weight must
    map (a tied head may be absent)."""
    from framework.registry import make_config
    from framework.stack import StackLM

    cfg = make_config("decoder", **config_values)
    model = StackLM(cfg)
    state = convert({k: v.detach().float() for k, v in hf_model.state_dict().items()}, cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg.tie_weights)]
    if missing or unexpected:
        raise ValueError(f"weights do not map: missing {missing}, unexpected {unexpected}")
    return model


def experts_from_hf(hf: StateDict, src: str, ours: StateDict, dst: str) -> None:
    """HF's fused experts ``<src>gate_up_proj`` (E, 2 d_ff, d) and ``down_proj`` -> our ``<dst>gate_proj``,
    ``up_proj``, ``down_proj`` (E, out, in) each."""
    ours[dst + "gate_proj"], ours[dst + "up_proj"] = hf[src + "gate_up_proj"].chunk(2, dim=1)
    ours[dst + "down_proj"] = hf[src + "down_proj"]


def experts_to_hf(ours: StateDict, src: str, hf: StateDict, dst: str) -> None:
    """The inverse of ``experts_from_hf``."""
    hf[dst + "gate_up_proj"] = torch.cat([ours[src + "gate_proj"], ours[src + "up_proj"]], dim=1)
    hf[dst + "down_proj"] = ours[src + "down_proj"]


def swiglu_weights(src: str, dst: str, state: StateDict, out: StateDict) -> None:
    """``<src>{gate,up,down}_proj.weight`` -> ``<dst>...`` (a dense SwiGLU MLP has the same names on both sides)."""
    for proj in ("gate_proj", "up_proj", "down_proj"):
        out[f"{dst}{proj}.weight"] = state[f"{src}{proj}.weight"]


def layout_problems(cfg: Any, name: str, tokens: set[str], channels: set[str], norm: str, position: str,
                    bias: bool) -> list[str]:
    """Why ``cfg`` (a StackConfig) is not the uniform pre-norm residual stack of Hugging Face's ``name``."""
    have_tokens, have_channels = {s.name for s in cfg.token_mixers}, {s.name for s in cfg.channel_mixers}
    problems = []
    if not have_tokens <= tokens or not have_channels <= channels:
        problems.append(f"token mixers {sorted(have_tokens)}, channel mixers {sorted(have_channels)} ({name} has "
                        f"{'/'.join(sorted(tokens))} and {'/'.join(sorted(channels))})")
    if (cfg.norm, cfg.position, cfg.bias) != (norm, position, bias):
        problems.append(f"norm={cfg.norm}, position={cfg.position}, bias={cfg.bias} ({name}: norm={norm}, "
                        f"position={position}, bias={bias})")
    if not cfg.pre_norm or not cfg.residual:
        problems.append(f"pre_norm={cfg.pre_norm}, residual={cfg.residual} ({name}: pre-norm residual blocks)")
    if cfg.embed_scale != 1.0 or cfg.logit_softcap is not None:
        problems.append(f"embed_scale={cfg.embed_scale}, logit_softcap={cfg.logit_softcap} ({name} has neither)")
    return problems


def rope_theta(hf_config: Any) -> float:
    """The RoPE base of a Llama-family config (``rope_parameters`` in transformers 5, ``rope_theta`` before);
    scaled RoPE (linear, dynamic, YaRN, llama3) has no counterpart in the stack."""
    params = getattr(hf_config, "rope_parameters", None) or {}
    kind = params.get("rope_type", "default")
    if kind != "default":
        raise NotConvertible(f"rope_parameters.rope_type={kind!r}: the stack has plain RoPE only (no scaling)")
    return float(params.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0)))
