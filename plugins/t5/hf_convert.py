"""Hugging Face ``T5ForConditionalGeneration`` weights -> this plugin's ``T5`` state dict.

Only names change: every projection is a bias-free ``nn.Linear`` in both. The relative position bias
lives in the first block of each Hugging Face stack and is shared by the stack's layers, as here.
The dense FFNs only (``ffn=relu``: v1.0 ``wi``; ``ffn=gated_gelu``: v1.1 ``wi_0``/``wi_1``); Hugging Face
has no MoE T5.
"""
from __future__ import annotations

from typing import Mapping

import torch

from .config import T5Config

_ATTENTION = (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "o_proj"))  # (HF, ours)


def from_hf_state_dict(hf: Mapping[str, torch.Tensor], cfg: T5Config) -> dict[str, torch.Tensor]:
    """Our state dict for a Hugging Face T5 state dict with the shapes of ``cfg``; load it with
    ``T5(cfg).load_state_dict(...)`` (``lm_head.weight`` is the embedding's when ``cfg.tie_weights``)."""
    if cfg.ffn not in ("relu", "gated_gelu"):
        raise ValueError(f"ffn: Hugging Face T5 has dense FFNs only (relu, gated_gelu), got {cfg.ffn!r}")
    gated = cfg.ffn == "gated_gelu"
    ours = {
        "shared.weight": hf["shared.weight"],
        "lm_head.weight": hf["lm_head.weight"],
        "enc_bias.embedding.weight": hf["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
        "dec_bias.embedding.weight": hf["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
        "enc_norm.weight": hf["encoder.final_layer_norm.weight"],
        "dec_norm.weight": hf["decoder.final_layer_norm.weight"],
    }

    def attn(src: str, dst: str) -> None:
        for a, b in _ATTENTION:
            ours[f"{dst}.{b}.weight"] = hf[f"{src}.{a}.weight"]

    def ffn(src: str, dst: str) -> None:
        if gated:
            ours[f"{dst}.ff.gate_proj.weight"] = hf[f"{src}.wi_0.weight"]
            ours[f"{dst}.ff.up_proj.weight"] = hf[f"{src}.wi_1.weight"]
        else:
            ours[f"{dst}.ff.up_proj.weight"] = hf[f"{src}.wi.weight"]
        ours[f"{dst}.ff.down_proj.weight"] = hf[f"{src}.wo.weight"]

    for i in range(cfg.n_layers):
        s, d = f"encoder.block.{i}.layer", f"encoder.{i}"
        attn(f"{s}.0.SelfAttention", f"{d}.attn")
        ours[f"{d}.attn_norm.weight"] = hf[f"{s}.0.layer_norm.weight"]
        ffn(f"{s}.1.DenseReluDense", f"{d}.ffn")
        ours[f"{d}.ffn_norm.weight"] = hf[f"{s}.1.layer_norm.weight"]
    for i in range(cfg.decoder_layers):
        s, d = f"decoder.block.{i}.layer", f"decoder.{i}"
        attn(f"{s}.0.SelfAttention", f"{d}.self_attn")
        ours[f"{d}.self_norm.weight"] = hf[f"{s}.0.layer_norm.weight"]
        attn(f"{s}.1.EncDecAttention", f"{d}.cross_attn")
        ours[f"{d}.cross_norm.weight"] = hf[f"{s}.1.layer_norm.weight"]
        ffn(f"{s}.2.DenseReluDense", f"{d}.ffn")
        ours[f"{d}.ffn_norm.weight"] = hf[f"{s}.2.layer_norm.weight"]
    return ours
