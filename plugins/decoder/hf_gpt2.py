"""Hugging Face ``GPT2LMHeadModel`` <-> the decoder stack's ``gpt`` preset (dense attention, learned positions,
LayerNorm with bias, GELU MLP, pre-norm).

GPT-2's ``Conv1D`` stores (in, out) weights (y = x @ W + b) where ``nn.Linear`` stores (out, in), and its fused
``c_attn`` holds q, k, v side by side along the output dimension: the state-dict mapping transposes and splits.
"""
from __future__ import annotations

from typing import Any

import torch

from framework.interop import NotConvertible

from .hf_convert import StateDict, layout_problems

# our activation -> GPT-2's activation_function (gelu_new is the tanh approximation); and back
_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}
_FROM_HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": None,
                        "gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu"}


def config_from_hf(c: Any, max_seq_len: int | None = None) -> dict[str, Any]:
    """StackConfig keyword arguments for a ``GPT2Config``; ``max_seq_len`` at most its ``n_positions``."""
    activation = _FROM_HF_ACTIVATIONS.get(c.activation_function)
    if activation is None:
        raise NotConvertible(f"activation_function={c.activation_function!r}: the stack's mlp has "
                             f"{sorted(_ACTIVATIONS.values())}")
    for flag in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
        if getattr(c, flag, False):
            raise NotConvertible(f"{flag}=True: the stack's attention has no such option")
    if not getattr(c, "scale_attn_weights", True):
        raise NotConvertible("scale_attn_weights=False: the stack's attention always scales by 1/sqrt(head_dim)")
    if max_seq_len is not None and max_seq_len != c.n_positions:
        raise NotConvertible(f"max_seq_len={max_seq_len}: GPT-2's learned position table fixes it at "
                             f"n_positions={c.n_positions}")
    return {
        "vocab_size": c.vocab_size, "d_model": c.n_embd, "n_layers": c.n_layer, "n_heads": c.n_head,
        "d_ff": c.n_inner or 4 * c.n_embd, "max_seq_len": c.n_positions, "mixer": "attention", "ffn": "mlp",
        "position": "learned", "norm": "layernorm", "norm_eps": c.layer_norm_epsilon, "activation": activation,
        "bias": True, "pre_norm": True, "tie_weights": bool(c.tie_word_embeddings), "dropout": 0.0,
    }


def hf_config(cfg: Any) -> Any:
    """The ``transformers`` GPT2Config of the same model."""
    import transformers

    problems = layout_problems(cfg, "GPT-2", {"attention"}, {"mlp"}, "layernorm", "learned", True)
    if cfg.n_kv_heads not in (None, cfg.n_heads):
        problems.append(f"n_kv_heads={cfg.n_kv_heads} (GPT-2 has one key/value head per query head)")
    if problems:
        raise NotConvertible("no GPT-2 counterpart: " + "; ".join(problems))
    return transformers.GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.max_seq_len, n_embd=cfg.d_model, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, n_inner=cfg.ffn_width(gated=False), activation_function=_ACTIVATIONS[cfg.activation],
        layer_norm_epsilon=cfg.norm_eps, tie_word_embeddings=cfg.tie_weights, resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )


def from_gpt2(hf: StateDict, n_layers: int) -> StateDict:
    """A ``GPT2LMHeadModel`` state dict -> ours."""
    ours = {
        "tok_emb.weight": hf["transformer.wte.weight"],
        "pos_emb.weight": hf["transformer.wpe.weight"],
        "final_norm.weight": hf["transformer.ln_f.weight"],
        "final_norm.bias": hf["transformer.ln_f.bias"],
        "lm_head.weight": hf.get("lm_head.weight", hf["transformer.wte.weight"]),
    }
    for i in range(n_layers):
        src, dst = f"transformer.h.{i}.", f"blocks.{i}."
        q_w, k_w, v_w = hf[src + "attn.c_attn.weight"].chunk(3, dim=1)  # (C, C) each, (in, out)
        q_b, k_b, v_b = hf[src + "attn.c_attn.bias"].chunk(3, dim=0)
        ours |= {
            dst + "mixer_norm.weight": hf[src + "ln_1.weight"], dst + "mixer_norm.bias": hf[src + "ln_1.bias"],
            dst + "mixer.q_proj.weight": q_w.t(), dst + "mixer.k_proj.weight": k_w.t(),
            dst + "mixer.v_proj.weight": v_w.t(),
            dst + "mixer.q_proj.bias": q_b, dst + "mixer.k_proj.bias": k_b, dst + "mixer.v_proj.bias": v_b,
            dst + "mixer.o_proj.weight": hf[src + "attn.c_proj.weight"].t(),
            dst + "mixer.o_proj.bias": hf[src + "attn.c_proj.bias"],
            dst + "ffn_norm.weight": hf[src + "ln_2.weight"], dst + "ffn_norm.bias": hf[src + "ln_2.bias"],
            dst + "ffn.up_proj.weight": hf[src + "mlp.c_fc.weight"].t(),
            dst + "ffn.up_proj.bias": hf[src + "mlp.c_fc.bias"],
            dst + "ffn.down_proj.weight": hf[src + "mlp.c_proj.weight"].t(),
            dst + "ffn.down_proj.bias": hf[src + "mlp.c_proj.bias"],
        }
    return ours


def to_gpt2(ours: StateDict, n_layers: int) -> StateDict:
    """Ours -> a ``GPT2LMHeadModel`` state dict (the inverse of ``from_gpt2``)."""
    hf = {
        "transformer.wte.weight": ours["tok_emb.weight"], "transformer.wpe.weight": ours["pos_emb.weight"],
        "transformer.ln_f.weight": ours["final_norm.weight"], "transformer.ln_f.bias": ours["final_norm.bias"],
        "lm_head.weight": ours["lm_head.weight"],
    }
    for i in range(n_layers):
        src, dst = f"blocks.{i}.", f"transformer.h.{i}."
        qkv = [ours[f"{src}mixer.{p}_proj.weight"] for p in "qkv"]
        hf |= {
            dst + "ln_1.weight": ours[src + "mixer_norm.weight"], dst + "ln_1.bias": ours[src + "mixer_norm.bias"],
            dst + "attn.c_attn.weight": torch.cat(qkv, dim=0).t(),
            dst + "attn.c_attn.bias": torch.cat([ours[f"{src}mixer.{p}_proj.bias"] for p in "qkv"]),
            dst + "attn.c_proj.weight": ours[src + "mixer.o_proj.weight"].t(),
            dst + "attn.c_proj.bias": ours[src + "mixer.o_proj.bias"],
            dst + "ln_2.weight": ours[src + "ffn_norm.weight"], dst + "ln_2.bias": ours[src + "ffn_norm.bias"],
            dst + "mlp.c_fc.weight": ours[src + "ffn.up_proj.weight"].t(),
            dst + "mlp.c_fc.bias": ours[src + "ffn.up_proj.bias"],
            dst + "mlp.c_proj.weight": ours[src + "ffn.down_proj.weight"].t(),
            dst + "mlp.c_proj.bias": ours[src + "ffn.down_proj.bias"],
        }
    return hf
