"""Hugging Face ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` <-> the decoder stack's ``mamba`` / ``mamba2`` presets.

Config mapping (``config_from_hf`` / ``hf_config``) and state-dict mapping (``from_hf_mamba`` / ``to_hf_mamba``);
``stack_from_hf`` and ``hf_from_stack`` do both. The mixers keep Hugging Face's parameter layout and names
(``framework/mixers/ssm.py``), so the state-dict mapping only renames: ``backbone.layers.<i>.norm`` is our
``blocks.<i>.mixer_norm``, ``backbone.layers.<i>.mixer.*`` our ``blocks.<i>.mixer.*``, ``backbone.norm_f`` our
``final_norm``, ``backbone.embeddings`` our ``tok_emb``.

```python
from transformers import MambaForCausalLM
from plugins.decoder.hf_mamba import stack_from_hf
ours = stack_from_hf(MambaForCausalLM.from_pretrained("state-spaces/mamba-130m-hf"))
```

Used by tests/test_ssm.py (parity on logits and greedy generation).
"""
from __future__ import annotations

from typing import Any

import torch

from framework.stack import StackConfig, StackLM

from .hf_convert import load_stack

StateDict = dict[str, torch.Tensor]
_KINDS = {"mamba": "mamba", "mamba2": "mamba2"}


def _kind(hf_config: Any) -> str:
    kind = getattr(hf_config, "model_type", None)
    if kind not in _KINDS:
        raise ValueError(f"expected a Hugging Face Mamba or Mamba-2 config, got model_type {kind!r}")
    return kind


def config_from_hf(hf_config: Any) -> dict[str, Any]:
    """StackConfig keyword arguments for a ``MambaConfig`` or ``Mamba2Config`` (``StackConfig(**out)``).

    Refuses what the stack does not model: another activation than SiLU, a time-step limit (Mamba-2's
    ``time_step_limit`` other than (0, inf)), or Mamba-2's ``head_dim * num_heads != expand * hidden_size``."""
    kind = _kind(hf_config)
    if getattr(hf_config, "hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {hf_config.hidden_act!r}: the ssm mixers use SiLU")
    ssm: dict[str, Any] = {
        "d_state": hf_config.state_size, "d_conv": hf_config.conv_kernel, "expand": int(hf_config.expand),
        "dt_min": hf_config.time_step_min, "dt_max": hf_config.time_step_max,
        "dt_init_floor": hf_config.time_step_floor, "conv_bias": hf_config.use_conv_bias,
    }
    if kind == "mamba":
        ssm["dt_rank"] = int(hf_config.time_step_rank)
    else:
        limit = tuple(float(v) for v in hf_config.time_step_limit)
        if limit != (0.0, float("inf")):
            raise ValueError(f"time_step_limit {limit}: the mamba2 mixer does not clamp dt (it needs (0.0, inf))")
        d_inner = int(hf_config.expand) * hf_config.hidden_size
        if hf_config.num_heads * hf_config.head_dim != d_inner:
            raise ValueError(f"num_heads ({hf_config.num_heads}) * head_dim ({hf_config.head_dim}) must equal "
                             f"expand * hidden_size ({d_inner})")
        ssm.update(head_dim=hf_config.head_dim, n_groups=hf_config.n_groups)  # chunk_size: ours (a speed knob)
    defaults = StackConfig().ssm
    return {
        "vocab_size": hf_config.vocab_size, "d_model": hf_config.hidden_size, "n_layers": hf_config.num_hidden_layers,
        "mixer": _KINDS[kind], "ffn": "none", "position": "none", "norm": "rmsnorm",
        "norm_eps": hf_config.layer_norm_epsilon, "bias": bool(hf_config.use_bias),
        "tie_weights": bool(hf_config.tie_word_embeddings), "dropout": 0.0,
        "ssm": {k: v for k, v in ssm.items() if getattr(defaults, k) != v},
    }


def hf_config(cfg: StackConfig) -> Any:
    """The ``transformers`` config of the same model (a pure ``mamba`` or ``mamba2`` stack, no channel mixer)."""
    import transformers

    kinds = {s.name for s in cfg.token_mixers}
    channels = {s.name for s in cfg.channel_mixers}
    if len(kinds) != 1 or not kinds <= set(_KINDS) or channels != {"none"} or cfg.norm != "rmsnorm" \
            or cfg.position != "none" or not cfg.pre_norm or not cfg.residual:
        raise ValueError("only a pure mamba or mamba2 stack (ffn none, rmsnorm, pre-norm residual, position none) "
                         f"has a Hugging Face counterpart; this one has token mixers {sorted(kinds)}, "
                         f"channel mixers {sorted(channels)}")
    kind, o = kinds.pop(), cfg.ssm
    common = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, state_size=o.d_state,
        conv_kernel=o.d_conv, expand=o.expand, layer_norm_epsilon=cfg.norm_eps, use_bias=cfg.bias,
        use_conv_bias=o.conv_bias, hidden_act="silu", time_step_min=o.dt_min, time_step_max=o.dt_max,
        time_step_floor=o.dt_init_floor, tie_word_embeddings=cfg.tie_weights, pad_token_id=None,
        bos_token_id=None, eos_token_id=None,
    )
    if kind == "mamba":
        rank = -(-cfg.d_model // 16) if o.dt_rank == "auto" else o.dt_rank
        return transformers.MambaConfig(time_step_rank=rank, **common)
    d_inner = o.expand * cfg.d_model
    return transformers.Mamba2Config(num_heads=d_inner // o.head_dim, head_dim=o.head_dim, n_groups=o.n_groups,
                                     chunk_size=o.chunk_size, **common)


def from_hf_mamba(hf: StateDict, n_layers: int) -> StateDict:
    """A ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` state dict -> ours (names only; the same tensors)."""
    ours = {
        "tok_emb.weight": hf["backbone.embeddings.weight"],
        "final_norm.weight": hf["backbone.norm_f.weight"],
        "lm_head.weight": hf.get("lm_head.weight", hf["backbone.embeddings.weight"]),
    }
    for i in range(n_layers):
        src, dst = f"backbone.layers.{i}.", f"blocks.{i}."
        ours[dst + "mixer_norm.weight"] = hf[src + "norm.weight"]
        for key, value in hf.items():
            if key.startswith(src + "mixer."):
                ours[dst + key[len(src):]] = value
    return ours


def to_hf_mamba(ours: StateDict, n_layers: int) -> StateDict:
    """Ours -> a ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` state dict."""
    hf = {
        "backbone.embeddings.weight": ours["tok_emb.weight"],
        "backbone.norm_f.weight": ours["final_norm.weight"],
        "lm_head.weight": ours["lm_head.weight"],
    }
    for i in range(n_layers):
        src, dst = f"blocks.{i}.", f"backbone.layers.{i}."
        hf[dst + "norm.weight"] = ours[src + "mixer_norm.weight"]
        for key, value in ours.items():
            if key.startswith(src + "mixer."):
                hf[dst + key[len(src):]] = value
    return hf


def stack_from_hf(hf_model: torch.nn.Module) -> StackLM:
    """Our model with the weights of a ``MambaForCausalLM`` or ``Mamba2ForCausalLM`` (same numbers, fp32)."""
    return load_stack(config_from_hf(hf_model.config), hf_model, lambda state, cfg: from_hf_mamba(state, cfg.n_layers))


def hf_from_stack(model: StackLM) -> torch.nn.Module:
    """The ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` with our model's weights."""
    import transformers

    config = hf_config(model.config)
    cls = transformers.MambaForCausalLM if config.model_type == "mamba" else transformers.Mamba2ForCausalLM
    hf = cls(config)
    state = to_hf_mamba(model.state_dict(), model.config.n_layers)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(f"weights do not map: missing {missing}, unexpected {unexpected}")
    return hf.eval()
