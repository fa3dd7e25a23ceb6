"""Hugging Face ``RecurrentGemmaForCausalLM`` <-> the decoder stack's ``griffin`` preset (rglru + sliding_window).

Config mapping (``config_from_hf`` / ``hf_config``) and state-dict mapping (``from_hf_recurrent_gemma`` /
``to_hf_recurrent_gemma``); ``stack_from_hf`` and ``hf_from_stack`` do both. The ``rglru`` mixer keeps Hugging
Face's parameter names and layouts (``framework/mixers/rglru.py``), as do attention and the gated MLP, so the
mapping renames, plus three exact rewrites:

* RecurrentGemma's RMSNorm scales by ``1 + weight``; ours (``nn.RMSNorm``) by ``weight``: +1 / -1.
* Its q/k/v projections have no bias (``attention_bias=False``) but its o_proj has one; the stack has one
  ``bias`` switch, so our q/k/v biases are loaded as zeros (and exported with ``attention_bias=True`` when
  training made them non-zero).
* Its embeddings are multiplied by ``sqrt(hidden_size)`` rounded to bf16 (a bf16 buffer); ours take that exact
  number as ``embed_scale`` (the ``griffin`` preset says ``sqrt_d_model``, the unrounded value).

Refused, each naming the reason (the stack cannot express it; see ``plugins/decoder/conf/model/griffin.yaml``):
partial rotary embeddings (RecurrentGemma's default ``partial_rotary_factor=0.5``: the stack rotates whole
heads), a tanh-approximated GELU (its default ``gelu_pytorch_tanh``, shared by the MLP and the recurrent block's
gate branch: the stack's ``geglu`` uses exact GELU), block types the stack's layer patterns cannot place.

```python
from transformers import RecurrentGemmaConfig, RecurrentGemmaForCausalLM
from plugins.decoder.hf_recurrent_gemma import stack_from_hf
hf = RecurrentGemmaForCausalLM(RecurrentGemmaConfig(hidden_activation="gelu", rope_parameters={
    "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0}, ...))
ours = stack_from_hf(hf)
```

Used by tests/test_rglru_hybrids.py (parity on logits and greedy generation).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from framework.stack import StackConfig, StackLM

from .hf_convert import load_stack

StateDict = dict[str, torch.Tensor]
_KINDS = {"linear_attention": "rglru", "sliding_attention": "sliding_window"}


def hf_embed_scale(hidden_size: int) -> float:
    """RecurrentGemma's embedding normaliser: sqrt(hidden_size) held in a bf16 buffer."""
    return float(torch.tensor(math.sqrt(hidden_size), dtype=torch.bfloat16))


def _layer_pattern(names: list[str]) -> dict[str, Any]:
    """StackConfig keys placing ``names`` (one token mixer per layer): one mixer, a periodic one, or a list."""
    n = len(names)
    if len(set(names)) == 1:
        return {"mixer": names[0]}
    period = next(p for p in range(1, n + 1) if all(names[i] == names[i % p] for i in range(n)))
    block = names[:period]
    if block.count("sliding_window") == 1:
        return {"mixer": "rglru", "mixer_every": {"name": "sliding_window", "every": period,
                                                  "offset": block.index("sliding_window")}}
    if n % period == 0:
        return {"layers": block}
    raise ValueError(f"block types {block} repeated to {n} layers: the stack places a list that divides n_layers "
                     "or one periodic mixer")


def config_from_hf(hf_config: Any, max_seq_len: int = 8192) -> dict[str, Any]:
    """StackConfig keyword arguments for a ``RecurrentGemmaConfig`` (``StackConfig(**out)``).

    ``max_seq_len``: the stack keeps this many tokens of context in generation (RecurrentGemma has no limit: its
    attention is local and RoPE; the recurrent layers see everything before the crop)."""
    if getattr(hf_config, "model_type", None) != "recurrent_gemma":
        raise ValueError(f"expected a Hugging Face RecurrentGemma config, got model_type "
                         f"{getattr(hf_config, 'model_type', None)!r}")
    if hf_config.hidden_activation != "gelu":
        raise ValueError(f"hidden_activation {hf_config.hidden_activation!r}: the stack's geglu channel mixer uses "
                         "exact GELU ('gelu'); a tanh-approximated GELU in the MLP cannot be mapped")
    rope = dict(hf_config.rope_parameters or {})
    if rope.get("rope_type", "default") != "default" or float(rope.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError(f"rope_parameters {rope}: the stack rotates whole heads (partial_rotary_factor 1.0, "
                         "rope_type default); RecurrentGemma's default rotates half of each head")
    d = hf_config.hidden_size
    if hf_config.head_dim * hf_config.num_attention_heads != d:
        raise ValueError(f"head_dim {hf_config.head_dim} * heads {hf_config.num_attention_heads} != hidden_size {d}")
    kv = hf_config.num_key_value_heads
    rglru = {"lru_width": None if hf_config.lru_width == d else hf_config.lru_width,
             "conv1d_width": hf_config.conv1d_width, "activation": "gelu"}
    defaults = StackConfig().rglru
    out = {
        "vocab_size": hf_config.vocab_size, "d_model": d, "n_layers": hf_config.num_hidden_layers,
        "n_heads": hf_config.num_attention_heads, "n_kv_heads": None if kv == hf_config.num_attention_heads else kv,
        "d_ff": hf_config.intermediate_size // 2, "max_seq_len": max_seq_len, "dropout": 0.0,
        **_layer_pattern([_KINDS[k] for k in hf_config.layers_block_type]),
        "ffn": "geglu", "position": "rope", "rope_theta": float(rope.get("rope_theta", 10000.0)), "norm": "rmsnorm",
        "norm_eps": hf_config.rms_norm_eps, "bias": True, "tie_weights": bool(hf_config.tie_word_embeddings),
        "embed_scale": hf_embed_scale(d), "logit_softcap": float(hf_config.logits_soft_cap),
        "rglru": {k: v for k, v in rglru.items() if getattr(defaults, k) != v},
    }
    if "sliding_window" in {_KINDS[k] for k in hf_config.layers_block_type}:
        out["sparse"] = {"window": hf_config.attention_window_size}
    return out


def hf_config(cfg: StackConfig, attention_bias: bool = False) -> Any:
    """The ``transformers`` RecurrentGemmaConfig of the same model (rglru / sliding_window layers, geglu, rmsnorm,
    rope, the rglru gate branch in exact GELU like the MLP, and embed_scale equal to HF's bf16 normaliser)."""
    import transformers

    names = [s.name for s in cfg.token_mixers]
    problems = []
    if not set(names) <= {"rglru", "sliding_window"}:
        problems.append(f"token mixers {sorted(set(names))} (RecurrentGemma has rglru and sliding_window only)")
    if {s.name for s in cfg.channel_mixers} != {"geglu"}:
        problems.append("channel mixers other than geglu")
    if (cfg.norm, cfg.position, cfg.pre_norm, cfg.residual, cfg.bias) != ("rmsnorm", "rope", True, True, True):
        problems.append("not a pre-norm residual rmsnorm stack with rope and biases")
    if "rglru" in names and (cfg.rglru.activation != "gelu" or cfg.rglru.n_heads not in (None, cfg.n_heads)):
        problems.append("rglru.activation must be 'gelu' (HF's one hidden_activation, exact in our geglu) and "
                        "rglru.n_heads null (HF's gates have num_attention_heads blocks)")
    scale = math.sqrt(cfg.d_model) if cfg.embed_scale == "sqrt_d_model" else cfg.embed_scale
    if scale != hf_embed_scale(cfg.d_model):
        problems.append(f"embed_scale {scale} != HF's bf16 normaliser {hf_embed_scale(cfg.d_model)} "
                        "(set model.embed_scale to that number)")
    if cfg.logit_softcap is None:
        problems.append("logit_softcap null (HF always soft-caps)")
    if problems:
        raise ValueError("no RecurrentGemma counterpart: " + "; ".join(problems))
    period = next(p for p in range(1, len(names) + 1) if all(names[i] == names[i % p] for i in range(len(names))))
    return transformers.RecurrentGemmaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
        intermediate_size=2 * cfg.ffn_width(gated=True), num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads or cfg.n_heads, lru_width=cfg.rglru.lru_width or cfg.d_model,
        attention_window_size=cfg.sparse.window, conv1d_width=cfg.rglru.conv1d_width,
        logits_soft_cap=cfg.logit_softcap, rms_norm_eps=cfg.norm_eps, hidden_activation="gelu",
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta, "partial_rotary_factor": 1.0},
        block_types=["recurrent" if n == "rglru" else "attention" for n in names[:period]],
        attention_bias=attention_bias, tie_word_embeddings=cfg.tie_weights,
        pad_token_id=None, bos_token_id=None, eos_token_id=None,
    )


def from_hf_recurrent_gemma(hf: StateDict, n_layers: int) -> StateDict:
    """A ``RecurrentGemmaForCausalLM`` state dict -> ours (norm weights + 1, zero q/k/v biases where HF has none)."""
    emb = hf["model.embed_tokens.weight"]
    ours = {"tok_emb.weight": emb, "lm_head.weight": hf.get("lm_head.weight", emb),
            "final_norm.weight": 1.0 + hf["model.final_norm.weight"]}
    for i in range(n_layers):
        src, dst = f"model.layers.{i}.", f"blocks.{i}."
        ours[dst + "mixer_norm.weight"] = 1.0 + hf[src + "temporal_pre_norm.weight"]
        ours[dst + "ffn_norm.weight"] = 1.0 + hf[src + "channel_pre_norm.weight"]
        for key, value in hf.items():
            if key.startswith(src + "temporal_block."):
                ours[dst + "mixer." + key[len(src + "temporal_block."):]] = value
            elif key.startswith(src + "mlp_block."):
                ours[dst + "ffn." + key[len(src + "mlp_block."):]] = value
        for proj in ("q_proj", "k_proj", "v_proj"):
            weight = hf.get(f"{src}temporal_block.{proj}.weight")
            if weight is not None and f"{src}temporal_block.{proj}.bias" not in hf:
                ours[f"{dst}mixer.{proj}.bias"] = weight.new_zeros(weight.shape[0])
    return ours


def to_hf_recurrent_gemma(ours: StateDict, n_layers: int, attention_bias: bool) -> StateDict:
    """Ours -> a ``RecurrentGemmaForCausalLM`` state dict (q/k/v biases dropped unless ``attention_bias``)."""
    hf = {"model.embed_tokens.weight": ours["tok_emb.weight"], "lm_head.weight": ours["lm_head.weight"],
          "model.final_norm.weight": ours["final_norm.weight"] - 1.0}
    for i in range(n_layers):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        hf[dst + "temporal_pre_norm.weight"] = ours[src + "mixer_norm.weight"] - 1.0
        hf[dst + "channel_pre_norm.weight"] = ours[src + "ffn_norm.weight"] - 1.0
        for key, value in ours.items():
            if key.startswith(src + "mixer.") and not key.startswith(src + "mixer_norm"):
                name = key[len(src + "mixer."):]
                if attention_bias or name not in ("q_proj.bias", "k_proj.bias", "v_proj.bias"):
                    hf[dst + "temporal_block." + name] = value
            elif key.startswith(src + "ffn.") and not key.startswith(src + "ffn_norm"):
                hf[dst + "mlp_block." + key[len(src + "ffn."):]] = value
    return hf


def stack_from_hf(hf_model: torch.nn.Module, max_seq_len: int = 8192) -> StackLM:
    """Our model with the weights of a ``RecurrentGemmaForCausalLM`` (same numbers, fp32)."""
    return load_stack(config_from_hf(hf_model.config, max_seq_len), hf_model, lambda state, cfg: from_hf_recurrent_gemma(state, cfg.n_layers))


def hf_from_stack(model: StackLM) -> torch.nn.Module:
    """The ``RecurrentGemmaForCausalLM`` with our model's weights."""
    import transformers

    ours = model.state_dict()
    qkv_bias = any(bool(v.any()) for k, v in ours.items() if k.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")))
    hf = transformers.RecurrentGemmaForCausalLM(hf_config(model.config, attention_bias=qkv_bias))
    missing, unexpected = hf.load_state_dict(to_hf_recurrent_gemma(ours, model.config.n_layers, qkv_bias), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.config.tie_weights)]
    if missing or unexpected:
        raise ValueError(f"weights do not map: missing {missing}, unexpected {unexpected}")
    return hf.eval()
