"""Hugging Face ``LlamaForCausalLM`` and ``MixtralForCausalLM`` <-> the decoder stack's ``llama`` and ``mixtral``
presets (dense GQA attention with RoPE, RMSNorm, no biases; SwiGLU, or a Mixtral MoE in every layer).

Llama's projections are ``nn.Linear`` with our head-major layout, so its state-dict mapping only renames (the
inverse is derived from it: ``framework.interop.invert``). Mixtral's router is a softmax over all experts, top-k,
renormalised: the same gates as our ``softmax_order: after_topk`` (a softmax over the k chosen logits); its experts
are fused (``gate_up_proj``), ours split.
"""
from __future__ import annotations

from typing import Any

from framework.interop import NotConvertible
from framework.interop.architecture import invert

from .hf_convert import StateDict, experts_from_hf, experts_to_hf, layout_problems, rope_theta


def _checked_llama_family(c: Any) -> None:
    if c.hidden_act != "silu":
        raise NotConvertible(f"hidden_act={c.hidden_act!r}: the stack's swiglu and experts use SiLU")
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(c, flag, False):
            raise NotConvertible(f"{flag}=True: the stack's one bias switch would also add norm biases")
    if getattr(c, "head_dim", None) not in (None, c.hidden_size // c.num_attention_heads):
        raise NotConvertible(f"head_dim={c.head_dim}: the stack's heads are hidden_size / num_attention_heads")
    if getattr(c, "sliding_window", None) is not None:
        raise NotConvertible(f"sliding_window={c.sliding_window}: only full attention converts (Mistral-style "
                             "windows are not mapped to the stack's sliding_window mixer)")


def config_from_hf(c: Any, max_seq_len: int | None = None) -> dict[str, Any]:
    """StackConfig keyword arguments for a ``LlamaConfig`` or ``MixtralConfig``."""
    _checked_llama_family(c)
    out: dict[str, Any] = {
        "vocab_size": c.vocab_size, "d_model": c.hidden_size, "n_layers": c.num_hidden_layers,
        "n_heads": c.num_attention_heads,
        "n_kv_heads": None if c.num_key_value_heads == c.num_attention_heads else c.num_key_value_heads,
        "d_ff": c.intermediate_size, "max_seq_len": max_seq_len or c.max_position_embeddings, "mixer": "attention",
        "ffn": "swiglu", "position": "rope", "rope_theta": rope_theta(c), "norm": "rmsnorm", "norm_eps": c.rms_norm_eps,
        "bias": False, "pre_norm": True, "tie_weights": bool(c.tie_word_embeddings), "dropout": 0.0,
    }
    if c.model_type == "mixtral":
        out["ffn"] = "moe"
        out["moe"] = {"n_experts": c.num_local_experts, "top_k": c.num_experts_per_tok, "softmax_order": "after_topk",
                      "dropless": True, "activation": "swiglu", "jitter": float(c.router_jitter_noise),
                      "balance_loss_weight": float(c.router_aux_loss_coef), "z_loss_weight": 0.0}
    return out


def _llama_kwargs(cfg: Any) -> dict[str, Any]:
    return dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_width(gated=True),
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads or cfg.n_heads, max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        hidden_act="silu", tie_word_embeddings=cfg.tie_weights, attention_dropout=cfg.dropout,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )


def llama_config(cfg: Any) -> Any:
    """The ``transformers`` LlamaConfig of the same model."""
    import transformers

    problems = layout_problems(cfg, "Llama", {"attention"}, {"swiglu"}, "rmsnorm", "rope", False)
    if problems:
        raise NotConvertible("no Llama counterpart: " + "; ".join(problems))
    return transformers.LlamaConfig(attention_bias=False, mlp_bias=False, **_llama_kwargs(cfg))


def mixtral_config(cfg: Any) -> Any:
    """The ``transformers`` MixtralConfig of the same model (an MoE channel mixer in every layer)."""
    import transformers

    problems = layout_problems(cfg, "Mixtral", {"attention"}, {"moe"}, "rmsnorm", "rope", False)
    m = cfg.moe
    if (m.router, m.score, m.softmax_order, m.dropless, m.activation, m.n_shared_experts, m.bias, m.bias_balance) \
            != ("token_choice", "softmax", "after_topk", True, "swiglu", 0, False, False) \
            or m.d_ff not in (None, cfg.ffn_width(gated=True)) or m.n_groups != 1:
        problems.append("moe must be Mixtral's router: token choice, softmax over the top-k, dropless, swiglu experts "
                        "of the layer's width, no shared experts, expert groups, biases or bias balancing")
    if problems:
        raise NotConvertible("no Mixtral counterpart: " + "; ".join(problems))
    return transformers.MixtralConfig(
        num_local_experts=m.n_experts, num_experts_per_tok=m.top_k, router_jitter_noise=m.jitter,
        router_aux_loss_coef=m.balance_loss_weight, sliding_window=None, **_llama_kwargs(cfg))


def from_llama(hf: StateDict, n_layers: int) -> StateDict:
    """A ``LlamaForCausalLM`` (or, without its experts, ``MixtralForCausalLM``) state dict -> ours: names only."""
    emb = hf["model.embed_tokens.weight"]
    ours = {"tok_emb.weight": emb, "final_norm.weight": hf["model.norm.weight"],
            "lm_head.weight": hf.get("lm_head.weight", emb)}
    for i in range(n_layers):
        src, dst = f"model.layers.{i}.", f"blocks.{i}."
        ours[dst + "mixer_norm.weight"] = hf[src + "input_layernorm.weight"]
        ours[dst + "ffn_norm.weight"] = hf[src + "post_attention_layernorm.weight"]
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            ours[dst + f"mixer.{proj}.weight"] = hf[src + f"self_attn.{proj}.weight"]
        if src + "mlp.gate_proj.weight" in hf:
            for proj in ("gate_proj", "up_proj", "down_proj"):
                ours[dst + f"ffn.{proj}.weight"] = hf[src + f"mlp.{proj}.weight"]
    return ours


def from_mixtral(hf: StateDict, n_layers: int) -> StateDict:
    ours = from_llama(hf, n_layers)
    for i in range(n_layers):
        src, dst = f"model.layers.{i}.mlp.", f"blocks.{i}.ffn."
        ours[dst + "router.weight.weight"] = hf[src + "gate.weight"]
        experts_from_hf(hf, src + "experts.", ours, dst + "experts.")
    return ours


def to_llama(ours: StateDict, cfg: Any, hf_template: StateDict) -> StateDict:
    return invert(lambda hf: from_llama(hf, cfg.n_layers), hf_template, ours)


def to_mixtral(ours: StateDict, cfg: Any, hf_template: StateDict) -> StateDict:
    dense = {k: v for k, v in hf_template.items() if ".mlp." not in k}
    hf = invert(lambda h: from_llama(h, cfg.n_layers), dense, ours)
    for i in range(cfg.n_layers):
        src, dst = f"blocks.{i}.ffn.", f"model.layers.{i}.mlp."
        hf[dst + "gate.weight"] = ours[src + "router.weight.weight"]
        experts_to_hf(ours, src + "experts.", hf, dst + "experts.")
    return hf
