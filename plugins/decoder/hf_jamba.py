"""Hugging Face ``JambaForCausalLM`` <-> the decoder stack's ``jamba`` preset (mamba + attention, swiglu + moe).

Config mapping (``config_from_hf`` / ``hf_config``) and state-dict mapping (``from_hf_jamba`` / ``to_hf_jamba``);
``stack_from_hf`` and ``hf_from_stack`` do both. Jamba's layer pattern is the stack's ``mixer_every`` /
``ffn_every`` (attention at ``i % attn_layer_period == attn_layer_offset``, experts at ``i % expert_layer_period ==
expert_layer_offset``); its pieces map by name: ``mamba`` / ``self_attn`` -> our ``mixer`` (the mamba mixer keeps
Hugging Face's names, ``framework/mixers/ssm.py``), ``input_layernorm`` / ``pre_ff_layernorm`` -> ``mixer_norm`` /
``ffn_norm``, ``feed_forward`` -> ``ffn``: the dense MLP by name, the MoE's ``router.weight`` -> our
``router.weight.weight`` and its fused ``experts.gate_up_proj`` (E, 2 * d_ff, d) split into our ``gate_proj`` and
``up_proj``. The router is Jamba's: top-k of the softmax over all experts, not renormalised (``moe.softmax_order:
before_topk``), dropless; no position encoding anywhere.

Refused: **the RMSNorms Jamba's Mamba layers apply to dt, B and C** (``dt_layernorm``, ``b_layernorm``,
``c_layernorm``, in every ``JambaMambaMixer``): the stack's ``mamba`` mixer has no such norms, so a real Jamba
checkpoint does not convert until it does (tests/test_rglru_hybrids.py shows everything else exact against a
JambaForCausalLM whose three norms are replaced by identities). Also refused: another activation than SiLU,
``mamba_proj_bias`` (the stack's one ``bias`` switch would add attention and MLP biases Jamba lacks), a
``head_dim`` other than hidden_size / heads.

```python
from plugins.decoder.hf_jamba import stack_from_hf, hf_from_stack
```
"""
from __future__ import annotations

from typing import Any

import torch

from framework.stack import StackConfig, StackLM

from .hf_convert import experts_from_hf, experts_to_hf, load_stack, swiglu_weights

StateDict = dict[str, torch.Tensor]
_INNER_NORMS = ("dt_layernorm", "b_layernorm", "c_layernorm")


def _periodic(special: list[bool]) -> tuple[int, int] | None:
    """(every, offset) with special[i] == (i % every == offset) for every layer; None when no layer is special."""
    if not any(special):
        return None
    first = special.index(True)
    for every in range(first + 1, len(special) + 1):
        if all(s == (i % every == first) for i, s in enumerate(special)):
            return every, first
    raise ValueError(f"layers {[i for i, s in enumerate(special) if s]} are not one periodic pattern")


def _placement(every: int, offset: int, n_layers: int, base: str, name: str, one: str, periodic: str) -> dict:
    if offset >= n_layers:
        return {one: base}
    if every == 1:
        return {one: name}
    return {one: base, periodic: {"name": name, "every": every, "offset": offset}}


def config_from_hf(hf_config: Any, max_seq_len: int = 4096) -> dict[str, Any]:
    """StackConfig keyword arguments for a ``JambaConfig`` (``StackConfig(**out)``). ``max_seq_len``: the context
    the stack keeps in generation (Jamba's attention has no position encoding, hence no table to size)."""
    c = hf_config
    if getattr(c, "model_type", None) != "jamba":
        raise ValueError(f"expected a Hugging Face Jamba config, got model_type {getattr(c, 'model_type', None)!r}")
    if c.hidden_act != "silu":
        raise ValueError(f"hidden_act {c.hidden_act!r}: the stack's mamba and swiglu use SiLU")
    if c.mamba_proj_bias:
        raise ValueError("mamba_proj_bias=True: the stack's one bias switch would also add attention and MLP biases")
    if getattr(c, "head_dim", None) not in (None, c.hidden_size // c.num_attention_heads):
        raise ValueError(f"head_dim {c.head_dim}: the stack's heads are hidden_size / num_attention_heads")
    n = c.num_hidden_layers
    out: dict[str, Any] = {
        "vocab_size": c.vocab_size, "d_model": c.hidden_size, "n_layers": n, "n_heads": c.num_attention_heads,
        "n_kv_heads": None if c.num_key_value_heads == c.num_attention_heads else c.num_key_value_heads,
        "d_ff": c.intermediate_size, "max_seq_len": max_seq_len, "position": "none", "norm": "rmsnorm",
        "norm_eps": c.rms_norm_eps, "bias": False, "tie_weights": bool(c.tie_word_embeddings), "dropout": 0.0,
        **_placement(c.attn_layer_period, c.attn_layer_offset, n, "mamba", "attention", "mixer", "mixer_every"),
    }
    moe_layers = c.num_experts > 1 and c.expert_layer_offset < n
    out.update(_placement(c.expert_layer_period, c.expert_layer_offset if moe_layers else n, n, "swiglu", "moe",
                          "ffn", "ffn_every"))
    if moe_layers:
        out["moe"] = {"n_experts": c.num_experts, "top_k": c.num_experts_per_tok, "softmax_order": "before_topk",
                      "balance_loss_weight": c.router_aux_loss_coef, "z_loss_weight": 0.0}
    if out["mixer"] == "mamba":
        ssm = {"d_state": c.mamba_d_state, "d_conv": c.mamba_d_conv, "expand": c.mamba_expand,
               "dt_rank": int(c.mamba_dt_rank), "conv_bias": bool(c.mamba_conv_bias)}
        defaults = StackConfig().ssm
        out["ssm"] = {k: v for k, v in ssm.items() if getattr(defaults, k) != v}
    return out


def hf_config(cfg: StackConfig) -> Any:
    """The ``transformers`` JambaConfig of the same model: mamba / attention layers (attention periodic), swiglu /
    moe channel mixers (moe periodic, Jamba's router), rmsnorm, no positions, no biases."""
    import transformers

    tokens, channels = [s.name for s in cfg.token_mixers], [s.name for s in cfg.channel_mixers]
    problems = []
    if not set(tokens) <= {"mamba", "attention"} or not set(channels) <= {"swiglu", "moe"}:
        problems.append(f"token mixers {sorted(set(tokens))}, channel mixers {sorted(set(channels))} "
                        "(Jamba has mamba / attention and swiglu / moe)")
    if (cfg.norm, cfg.position, cfg.pre_norm, cfg.residual, cfg.bias) != ("rmsnorm", "none", True, True, False):
        problems.append("not a pre-norm residual rmsnorm stack without positions or biases")
    if cfg.embed_scale != 1.0 or cfg.logit_softcap is not None:
        problems.append("embed_scale / logit_softcap set")
    m = cfg.moe
    if "moe" in channels and (m.router, m.softmax_order, m.dropless, m.activation, m.n_shared_experts, m.bias,
                              m.d_ff not in (None, cfg.ffn_width(gated=True))) \
            != ("token_choice", "before_topk", True, "swiglu", 0, False, False):
        problems.append("moe must be Jamba's router: token choice, softmax before top-k, dropless, swiglu experts of "
                        "the MLP's width, no shared experts or biases")
    if problems:
        raise ValueError("no Jamba counterpart: " + "; ".join(problems))
    n = cfg.n_layers
    attn = _periodic([t == "attention" for t in tokens]) or (n + 1, n)
    experts = _periodic([c == "moe" for c in channels])
    o = cfg.ssm
    return transformers.JambaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=n, intermediate_size=cfg.ffn_width(True),
        num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads or cfg.n_heads, hidden_act="silu",
        rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_weights,
        attn_layer_period=attn[0], attn_layer_offset=attn[1],
        expert_layer_period=experts[0] if experts else 1, expert_layer_offset=experts[1] if experts else 0,
        num_experts=m.n_experts if experts else 1, num_experts_per_tok=m.top_k if experts else 1,
        router_aux_loss_coef=m.balance_loss_weight, mamba_d_state=o.d_state, mamba_d_conv=o.d_conv,
        mamba_expand=o.expand, mamba_dt_rank=-(-cfg.d_model // 16) if o.dt_rank == "auto" else o.dt_rank,
        mamba_conv_bias=o.conv_bias, mamba_proj_bias=False,
        pad_token_id=None, bos_token_id=None, eos_token_id=None,
    )


def from_hf_jamba(hf: StateDict, n_layers: int) -> StateDict:
    """A ``JambaForCausalLM`` state dict -> ours; refuses the dt/B/C norms of Jamba's Mamba layers."""
    inner = sorted(k for k in hf if any(f".mamba.{norm}." in k for norm in _INNER_NORMS))
    if inner:
        raise ValueError(
            "Jamba's Mamba layers RMS-normalise dt, B and C (dt_layernorm, b_layernorm, c_layernorm; "
            f"{inner[0]}, ...): the stack's mamba mixer has no such norms, so this model cannot be mapped exactly")
    emb = hf["model.embed_tokens.weight"]
    ours = {"tok_emb.weight": emb, "lm_head.weight": hf.get("lm_head.weight", emb),
            "final_norm.weight": hf["model.final_layernorm.weight"]}
    for i in range(n_layers):
        src, dst = f"model.layers.{i}.", f"blocks.{i}."
        ours[dst + "mixer_norm.weight"] = hf[src + "input_layernorm.weight"]
        ours[dst + "ffn_norm.weight"] = hf[src + "pre_ff_layernorm.weight"]
        for key, value in hf.items():
            for part in ("mamba.", "self_attn."):
                if key.startswith(src + part):
                    ours[dst + "mixer." + key[len(src + part):]] = value
        ff = src + "feed_forward."
        if ff + "router.weight" in hf:
            ours[dst + "ffn.router.weight.weight"] = hf[ff + "router.weight"]
            experts_from_hf(hf, ff + "experts.", ours, dst + "ffn.experts.")
        else:
            swiglu_weights(ff, dst + "ffn.", hf, ours)
    return ours


def to_hf_jamba(ours: StateDict, cfg: StackConfig) -> StateDict:
    """Ours -> a ``JambaForCausalLM`` state dict, without the dt/B/C norms (we have none: ``hf_from_stack``)."""
    hf = {"model.embed_tokens.weight": ours["tok_emb.weight"], "lm_head.weight": ours["lm_head.weight"],
          "model.final_layernorm.weight": ours["final_norm.weight"]}
    for i, (token, channel) in enumerate(zip(cfg.token_mixers, cfg.channel_mixers)):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        hf[dst + "input_layernorm.weight"] = ours[src + "mixer_norm.weight"]
        hf[dst + "pre_ff_layernorm.weight"] = ours[src + "ffn_norm.weight"]
        part = "mamba." if token.name == "mamba" else "self_attn."
        for key, value in ours.items():
            if key.startswith(src + "mixer.") and not key.startswith(src + "mixer_norm"):
                hf[dst + part + key[len(src + "mixer."):]] = value
        ff = dst + "feed_forward."
        if channel.name == "moe":
            hf[ff + "router.weight"] = ours[src + "ffn.router.weight.weight"]
            experts_to_hf(ours, src + "ffn.experts.", hf, ff + "experts.")
        else:
            swiglu_weights(src + "ffn.", ff, ours, hf)
    return hf


def stack_from_hf(hf_model: torch.nn.Module, max_seq_len: int = 4096) -> StackLM:
    """Our model with the weights of a ``JambaForCausalLM`` (same numbers, fp32)."""
    return load_stack(config_from_hf(hf_model.config, max_seq_len), hf_model,
                      lambda state, cfg: from_hf_jamba(state, cfg.n_layers))


def hf_from_stack(model: StackLM, identity_inner_norms: bool = False) -> torch.nn.Module:
    """The ``JambaForCausalLM`` with our model's weights. Jamba's dt/B/C norms have no counterpart here: refused
    unless ``identity_inner_norms`` replaces them by identities (then the two models compute the same function)."""
    import transformers

    if not identity_inner_norms:
        raise ValueError("a JambaForCausalLM RMS-normalises dt, B and C in its Mamba layers, which this stack does "
                         "not: pass identity_inner_norms=True to replace those norms by identities")
    hf = transformers.JambaForCausalLM(hf_config(model.config))
    for layer in hf.model.layers:
        if hasattr(layer, "mamba"):
            for norm in _INNER_NORMS:
                setattr(layer.mamba, norm, torch.nn.Identity())
    missing, unexpected = hf.load_state_dict(to_hf_jamba(model.state_dict(), model.config), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.config.tie_weights)]
    if missing or unexpected:
        raise ValueError(f"weights do not map: missing {missing}, unexpected {unexpected}")
    return hf.eval()
