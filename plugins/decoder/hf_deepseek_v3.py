"""Hugging Face ``DeepseekV3ForCausalLM`` <-> the decoder stack's ``deepseek`` preset (mla, swiglu then DeepSeekMoE).

Config mapping (``config_from_hf`` / ``hf_config``) and state-dict mapping (``from_hf_deepseek_v3`` /
``to_hf_deepseek_v3``); ``stack_from_hf`` and ``hf_from_stack`` do both. The stack's ``mla`` mixer keeps Hugging
Face's names (``q_proj`` or ``q_a_proj``/``q_a_layernorm``/``q_b_proj``, ``kv_a_proj_with_mqa``, ``kv_a_layernorm``,
``kv_b_proj``, ``o_proj``); ``first_k_dense_replace`` dense layers then MoE layers are the stack's ``ffn_layers``;
the router's ``gate.weight`` / ``gate.e_score_correction_bias`` -> our ``router.weight.weight`` / ``expert_bias``;
the fused ``experts.gate_up_proj`` (E, 2 * d_ff, d) splits into our ``gate_proj`` and ``up_proj``;
``shared_experts`` -> ``shared``.

RoPE layout: DeepSeek's checkpoints rotate interleaved pairs (``rope_interleave: true``, (x0, x1), (x2, x3), ...);
the stack rotates halves (x_i, x_{i + d/2}). Importing permutes the RoPE rows of the query and shared-key
projections (evens first, then odds), which makes the two compute the same scores exactly; exporting writes
``rope_interleave: false``. Refused: YaRN or other RoPE scaling (``rope_parameters.rope_type`` other than
default), attention biases, another activation than SiLU, multi-token-prediction layers.

```python
from plugins.decoder.hf_deepseek_v3 import stack_from_hf, hf_from_stack
```
"""
from __future__ import annotations

from typing import Any

import torch

from framework.stack import StackConfig, StackLM

from .hf_convert import experts_from_hf, experts_to_hf, load_stack, swiglu_weights

StateDict = dict[str, torch.Tensor]
_MLA_WEIGHTS = ("q_proj", "q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa", "kv_a_layernorm",
                "kv_b_proj", "o_proj")


def _rope_parameters(c: Any) -> dict:
    params = getattr(c, "rope_parameters", None) or {}
    if params.get("rope_type", "default") != "default":
        raise ValueError(f"rope_parameters.rope_type {params.get('rope_type')!r}: only plain RoPE maps (no YaRN scaling)")
    return params


def config_from_hf(hf_config: Any, max_seq_len: int | None = None) -> dict[str, Any]:
    """StackConfig keyword arguments for a ``DeepseekV3Config``."""
    c = hf_config
    if getattr(c, "model_type", None) != "deepseek_v3":
        raise ValueError(f"expected a Hugging Face DeepseekV3 config, got model_type {getattr(c, 'model_type', None)!r}")
    if c.hidden_act != "silu":
        raise ValueError(f"hidden_act {c.hidden_act!r}: the stack's swiglu and experts use SiLU")
    if c.attention_bias:
        raise ValueError("attention_bias=True: the stack's one bias switch would also add MLP biases DeepSeek lacks")
    n, dense = c.num_hidden_layers, min(c.first_k_dense_replace, c.num_hidden_layers)
    out: dict[str, Any] = {
        "vocab_size": c.vocab_size, "d_model": c.hidden_size, "n_layers": n, "n_heads": c.num_attention_heads,
        "d_ff": c.intermediate_size, "max_seq_len": max_seq_len or c.max_position_embeddings, "mixer": "mla",
        "ffn_layers": ["swiglu"] * dense + ["moe"] * (n - dense), "position": "rope", "norm": "rmsnorm",
        "norm_eps": c.rms_norm_eps, "bias": False, "tie_weights": bool(c.tie_word_embeddings), "dropout": 0.0,
        "rope_theta": float(_rope_parameters(c).get("rope_theta", 10000.0)),
        "mla": {"kv_lora_rank": c.kv_lora_rank, "q_lora_rank": c.q_lora_rank, "qk_rope_head_dim": c.qk_rope_head_dim,
                "qk_nope_head_dim": c.qk_nope_head_dim, "v_head_dim": c.v_head_dim},
    }
    if n > dense:
        out["moe"] = {"n_experts": c.n_routed_experts, "top_k": c.num_experts_per_tok, "d_ff": c.moe_intermediate_size,
                      "n_shared_experts": c.n_shared_experts, "score": "sigmoid", "norm_topk": bool(c.norm_topk_prob),
                      "routed_scaling": float(c.routed_scaling_factor), "n_groups": c.n_group or 1,
                      "topk_groups": c.topk_group or 1, "bias_balance": True, "balance_loss_weight": 0.0,
                      "z_loss_weight": 0.0}
    return out


def hf_config(cfg: StackConfig) -> Any:
    """The ``transformers`` DeepseekV3Config of the same model (rope_interleave false: the stack rotates halves)."""
    import transformers

    tokens, channels = {s.name for s in cfg.token_mixers}, [s.name for s in cfg.channel_mixers]
    dense = channels.index("moe") if "moe" in channels else len(channels)
    problems = []
    if tokens != {"mla"} or set(channels[:dense]) - {"swiglu"} or set(channels[dense:]) - {"moe"}:
        problems.append(f"token mixers {sorted(tokens)}, channel mixers {channels} (DeepSeek-V3: mla everywhere, "
                        "swiglu in the first layers, moe after)")
    if (cfg.norm, cfg.position, cfg.pre_norm, cfg.residual, cfg.bias) != ("rmsnorm", "rope", True, True, False):
        problems.append("not a pre-norm residual rmsnorm stack with RoPE and no biases")
    if cfg.embed_scale != 1.0 or cfg.logit_softcap is not None:
        problems.append("embed_scale / logit_softcap set")
    m = cfg.moe
    if dense < len(channels) and (m.router, m.score, m.dropless, m.activation, m.bias, m.bias_balance) \
            != ("token_choice", "sigmoid", True, "swiglu", False, True):
        problems.append("moe must be DeepSeek's router: token choice, sigmoid scores, dropless, swiglu experts, "
                        "bias_balance")
    if problems:
        raise ValueError("no DeepseekV3 counterpart: " + "; ".join(problems))
    o = cfg.mla
    nope, rope, v = o.dims(cfg.d_model, cfg.n_heads)
    return transformers.DeepseekV3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
        intermediate_size=cfg.ffn_width(gated=True), moe_intermediate_size=m.d_ff or cfg.ffn_width(gated=True),
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads, n_shared_experts=m.n_shared_experts,
        n_routed_experts=m.n_experts, num_experts_per_tok=m.top_k, routed_scaling_factor=m.routed_scaling,
        n_group=m.n_groups, topk_group=m.topk_groups, norm_topk_prob=m.norm_topk, first_k_dense_replace=dense,
        kv_lora_rank=o.kv_lora_rank, q_lora_rank=o.q_lora_rank, qk_rope_head_dim=rope, qk_nope_head_dim=nope,
        v_head_dim=v, hidden_act="silu", max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_weights, rope_interleave=False, attention_bias=False,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        pad_token_id=None, bos_token_id=None, eos_token_id=None,
    )


def _deinterleave(weight: torch.Tensor, start: int, rope: int, every: int | None = None) -> torch.Tensor:
    """Rows [start, start + rope) of each block of ``every`` rows (all rows: one block) reordered evens then odds."""
    perm = torch.cat([torch.arange(0, rope, 2), torch.arange(1, rope, 2)])
    blocks = weight.view(-1, every or weight.shape[0], *weight.shape[1:]).clone()
    blocks[:, start : start + rope] = blocks[:, start : start + rope][:, perm]
    return blocks.view_as(weight)


def from_hf_deepseek_v3(hf: StateDict, hf_config: Any) -> StateDict:
    """A ``DeepseekV3ForCausalLM`` state dict -> ours (RoPE rows de-interleaved when the config interleaves)."""
    c = hf_config
    extra = sorted(k for k in hf if k.startswith("model.layers.") and int(k.split(".")[2]) >= c.num_hidden_layers)
    if extra:
        raise ValueError(f"multi-token-prediction layers ({extra[0]}, ...) have no counterpart in the stack")
    emb = hf["model.embed_tokens.weight"]
    ours = {"tok_emb.weight": emb, "lm_head.weight": hf.get("lm_head.weight", emb),
            "final_norm.weight": hf["model.norm.weight"]}
    nope, rope, r = c.qk_nope_head_dim, c.qk_rope_head_dim, c.kv_lora_rank
    for i in range(c.num_hidden_layers):
        src, dst = f"model.layers.{i}.", f"blocks.{i}."
        ours[dst + "mixer_norm.weight"] = hf[src + "input_layernorm.weight"]
        ours[dst + "ffn_norm.weight"] = hf[src + "post_attention_layernorm.weight"]
        for name in _MLA_WEIGHTS:
            key = f"{src}self_attn.{name}.weight"
            if key in hf:
                value = hf[key]
                if c.rope_interleave and name in ("q_proj", "q_b_proj"):
                    value = _deinterleave(value, nope, rope, every=nope + rope)
                elif c.rope_interleave and name == "kv_a_proj_with_mqa":
                    value = _deinterleave(value, r, rope)
                ours[f"{dst}mixer.{name}.weight"] = value
        mlp, ff = src + "mlp.", dst + "ffn."
        if mlp + "gate.weight" in hf:
            ours[ff + "router.weight.weight"] = hf[mlp + "gate.weight"]
            ours[ff + "expert_bias"] = hf[mlp + "gate.e_score_correction_bias"]
            experts_from_hf(hf, mlp + "experts.", ours, ff + "experts.")
            swiglu_weights(mlp + "shared_experts.", ff + "shared.", hf, ours)
        else:
            swiglu_weights(mlp, ff, hf, ours)
    return ours


def to_hf_deepseek_v3(ours: StateDict, cfg: StackConfig) -> StateDict:
    """Ours -> a ``DeepseekV3ForCausalLM`` state dict for ``hf_config(cfg)`` (rope_interleave false)."""
    hf = {"model.embed_tokens.weight": ours["tok_emb.weight"], "lm_head.weight": ours["lm_head.weight"],
          "model.norm.weight": ours["final_norm.weight"]}
    for i, channel in enumerate(cfg.channel_mixers):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        hf[dst + "input_layernorm.weight"] = ours[src + "mixer_norm.weight"]
        hf[dst + "post_attention_layernorm.weight"] = ours[src + "ffn_norm.weight"]
        for name in _MLA_WEIGHTS:
            if f"{src}mixer.{name}.weight" in ours:
                hf[f"{dst}self_attn.{name}.weight"] = ours[f"{src}mixer.{name}.weight"]
        ff, mlp = src + "ffn.", dst + "mlp."
        if channel.name == "moe":
            hf[mlp + "gate.weight"] = ours[ff + "router.weight.weight"]
            hf[mlp + "gate.e_score_correction_bias"] = ours[ff + "expert_bias"]
            experts_to_hf(ours, ff + "experts.", hf, mlp + "experts.")
            swiglu_weights(ff + "shared.", mlp + "shared_experts.", ours, hf)
        else:
            swiglu_weights(ff, mlp, ours, hf)
    return hf


def stack_from_hf(hf_model: torch.nn.Module, max_seq_len: int | None = None) -> StackLM:
    """Our model with the weights of a ``DeepseekV3ForCausalLM`` (same numbers, fp32)."""
    return load_stack(config_from_hf(hf_model.config, max_seq_len), hf_model,
                      lambda state, cfg: from_hf_deepseek_v3(state, hf_model.config))


def hf_from_stack(model: StackLM) -> torch.nn.Module:
    """The ``DeepseekV3ForCausalLM`` with our model's weights."""
    import transformers

    hf = transformers.DeepseekV3ForCausalLM(hf_config(model.config)).eval()
    hf.load_state_dict(to_hf_deepseek_v3(model.state_dict(), model.config), strict=True)
    return hf
