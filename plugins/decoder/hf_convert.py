"""Hugging Face ``transformers`` state dicts -> the decoder stack's state dict (GPT-2 and Llama layouts).

Used by the parity tests (tests/test_hf_parity.py) and by users loading a ``transformers`` checkpoint
into the matching preset (``model=gpt`` / ``model=llama`` with the same sizes).
"""
from __future__ import annotations

import torch

StateDict = dict[str, torch.Tensor]


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
