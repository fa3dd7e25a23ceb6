"""Hugging Face ``transformers`` state dicts -> the decoder stack's state dict (GPT-2 and Llama layouts), and the
pieces every converter of this plugin shares (``hf_mamba``, ``hf_jamba``, ``hf_recurrent_gemma``,
``hf_deepseek_v3``): loading a mapped state dict into a stack, and the fused-experts layout of HF's MoE blocks.

Used by the parity tests (tests/test_hf_parity.py) and by users loading a ``transformers`` checkpoint
into the matching preset (``model=gpt`` / ``model=llama`` with the same sizes).
"""
from __future__ import annotations

from typing import Any

import torch

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


def from_gpt2(hf: StateDict, n_layers: int) -> StateDict:
    """GPT-2's Conv1D stores (in, out) weights (y = x @ W + b); nn.Linear stores (out, in). Its fused
    c_attn holds q, k, v side by side along the output dimension. The head is tied to the embedding."""
    ours = {
        "tok_emb.weight": hf["transformer.wte.weight"],
        "pos_emb.weight": hf["transformer.wpe.weight"],
        "final_norm.weight": hf["transformer.ln_f.weight"],
        "final_norm.bias": hf["transformer.ln_f.bias"],
        "lm_head.weight": hf["transformer.wte.weight"],
    }
    for i in range(n_layers):
        src, dst = f"transformer.h.{i}.", f"blocks.{i}."
        q_w, k_w, v_w = hf[src + "attn.c_attn.weight"].chunk(3, dim=1)  # (C, C) each, (in, out)
        q_b, k_b, v_b = hf[src + "attn.c_attn.bias"].chunk(3, dim=0)
        ours |= {
            dst + "mixer_norm.weight": hf[src + "ln_1.weight"],
            dst + "mixer_norm.bias": hf[src + "ln_1.bias"],
            dst + "mixer.q_proj.weight": q_w.t(),
            dst + "mixer.k_proj.weight": k_w.t(),
            dst + "mixer.v_proj.weight": v_w.t(),
            dst + "mixer.q_proj.bias": q_b,
            dst + "mixer.k_proj.bias": k_b,
            dst + "mixer.v_proj.bias": v_b,
            dst + "mixer.o_proj.weight": hf[src + "attn.c_proj.weight"].t(),
            dst + "mixer.o_proj.bias": hf[src + "attn.c_proj.bias"],
            dst + "ffn_norm.weight": hf[src + "ln_2.weight"],
            dst + "ffn_norm.bias": hf[src + "ln_2.bias"],
            dst + "ffn.up_proj.weight": hf[src + "mlp.c_fc.weight"].t(),
            dst + "ffn.up_proj.bias": hf[src + "mlp.c_fc.bias"],
            dst + "ffn.down_proj.weight": hf[src + "mlp.c_proj.weight"].t(),
            dst + "ffn.down_proj.bias": hf[src + "mlp.c_proj.bias"],
        }
    return ours


def from_llama(hf: StateDict, n_layers: int) -> StateDict:
    """Llama's projections are nn.Linear with the same head-major layout as ours; only names differ."""
    ours = {
        "tok_emb.weight": hf["model.embed_tokens.weight"],
        "final_norm.weight": hf["model.norm.weight"],
        "lm_head.weight": hf["lm_head.weight"],
    }
    for i in range(n_layers):
        src, dst = f"model.layers.{i}.", f"blocks.{i}."
        ours[dst + "mixer_norm.weight"] = hf[src + "input_layernorm.weight"]
        ours[dst + "ffn_norm.weight"] = hf[src + "post_attention_layernorm.weight"]
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            ours[dst + f"mixer.{proj}.weight"] = hf[src + f"self_attn.{proj}.weight"]
        for proj in ("gate_proj", "up_proj", "down_proj"):
            ours[dst + f"ffn.{proj}.weight"] = hf[src + f"mlp.{proj}.weight"]
    return ours
