"""Hugging Face ``BertForMaskedLM`` weights -> this plugin's ``Bert`` state dict.

Every projection is an ``nn.Linear`` in both, so only names change. Hugging Face's layout is ours with
``pre_norm=False`` (post-LN), ``position="learned"``, dense attention and ``ffn="mlp"``; the MLM decoder
is tied to the word embeddings and keeps its own bias.
"""
from __future__ import annotations

from typing import Mapping

import torch

from .config import BertConfig

_LINEARS = {  # ours -> Hugging Face, inside one encoder layer; weight and bias each
    "attn.q_proj": "attention.self.query", "attn.k_proj": "attention.self.key", "attn.v_proj": "attention.self.value",
    "attn.o_proj": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
    "ffn.up_proj": "intermediate.dense", "ffn.down_proj": "output.dense", "ffn_norm": "output.LayerNorm",
}


def from_hf_state_dict(hf: Mapping[str, torch.Tensor], cfg: BertConfig) -> dict[str, torch.Tensor]:
    """Our state dict for a Hugging Face BertForMaskedLM state dict with the shapes of ``cfg``."""
    layout = {"pre_norm": False, "position": "learned", "attention": "dense", "ffn": "mlp"}
    for name, value in layout.items():
        if getattr(cfg, name) != value:
            raise ValueError(f"{name}: Hugging Face BERT has {name}={value!r}, got {getattr(cfg, name)!r}")
    ours = {
        "tok_emb.weight": hf["bert.embeddings.word_embeddings.weight"],
        "pos_emb.weight": hf["bert.embeddings.position_embeddings.weight"],
        "emb_norm.weight": hf["bert.embeddings.LayerNorm.weight"],
        "emb_norm.bias": hf["bert.embeddings.LayerNorm.bias"],
        "mlm_head.dense.weight": hf["cls.predictions.transform.dense.weight"],
        "mlm_head.dense.bias": hf["cls.predictions.transform.dense.bias"],
        "mlm_head.norm.weight": hf["cls.predictions.transform.LayerNorm.weight"],
        "mlm_head.norm.bias": hf["cls.predictions.transform.LayerNorm.bias"],
        "mlm_head.decoder.weight": hf["bert.embeddings.word_embeddings.weight"],  # tied
        "mlm_head.bias": hf["cls.predictions.bias"],
    }
    if cfg.type_vocab_size:
        ours["type_emb.weight"] = hf["bert.embeddings.token_type_embeddings.weight"]
    for i in range(cfg.n_layers):
        src, dst = f"bert.encoder.layer.{i}.", f"blocks.{i}."
        for ours_name, hf_name in _LINEARS.items():
            ours[dst + ours_name + ".weight"] = hf[src + hf_name + ".weight"]
            ours[dst + ours_name + ".bias"] = hf[src + hf_name + ".bias"]
    return ours
