"""Checkpoints written before the composable stack, by the ``gpt``, ``moe``, ``sparse`` and ``rnn``
plugins, converted to the decoder plugin's config and parameter names (``load_checkpoint`` calls this)."""
from __future__ import annotations

import re
from typing import Any

import torch

from framework.config_schema import ConfigError

LEGACY_PLUGINS = ("gpt", "moe", "sparse", "rnn")


def _rename(state: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


_BLOCK_RULES = [(r"^blocks\.(\d+)\.attn_norm\.", r"blocks.\1.mixer_norm."), (r"^blocks\.(\d+)\.attn\.", r"blocks.\1.mixer.")]


def upgrade_checkpoint(plugin: str, config: dict[str, Any], state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(decoder config, decoder state dict) from a legacy plugin's ``model_config`` and ``state_dict``."""
    config = dict(config)
    if plugin in ("gpt", "sparse"):
        kind = config.pop("attention", "dense" if plugin == "gpt" else "sliding_window")
        config["mixer"] = "attention" if kind == "dense" else kind
        if kind == "dense":
            config.pop("sparse", None)
        if config.get("ffn") != "moe":
            config.pop("moe", None)
        return config, _rename(state, _BLOCK_RULES)
    if plugin == "moe":
        every = int(config.pop("moe_every_n", 1))
        activation = config.get("moe", {}).get("activation", "swiglu")
        config.update(activation="gelu", pre_norm=True)
        config.setdefault("position", "rope")
        config.setdefault("norm", "rmsnorm")
        config.setdefault("bias", False)
        if every == 1:
            config["ffn"] = "moe"
        else:  # dense layers use the experts' kind, moe at layers i with (i + 1) % every == 0
            config["ffn"] = "swiglu" if activation == "swiglu" else "mlp"
            config["ffn_every"] = {"name": "moe", "every": every, "offset": every - 1}
        return config, _rename(state, _BLOCK_RULES)
    if plugin == "rnn":
        hidden = config.pop("hidden_size", None)
        if hidden not in (None, config.get("d_model", 256)):
            raise ConfigError(f"ckpt: an rnn checkpoint with hidden_size={hidden} != d_model has no decoder equivalent "
                              "(the stack projects each recurrent layer back to d_model); retrain with model=lstm")
        cell = config.pop("cell", "lstm")
        nonlinearity = config.pop("nonlinearity", "tanh")
        rnn = {"nonlinearity": nonlinearity} if cell == "elman" and nonlinearity != "tanh" else {}
        config.update(mixer=cell, ffn="none", norm="none", residual=False, position="none", rnn=rnn)
        config.setdefault("d_model", 256)
        config.setdefault("n_layers", 2)
        config.setdefault("init_std", 0.1)
        rules = [(r"^embed\.", "tok_emb."), (r"^head\.", "lm_head."), (r"^layers\.(\d+)\.", r"blocks.\1.mixer.cell.")]
        return config, _rename(state, rules)
    raise ConfigError(f"ckpt: no conversion from plugin {plugin!r}; known: {', '.join(LEGACY_PLUGINS)}")
