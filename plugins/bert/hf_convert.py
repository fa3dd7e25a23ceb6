"""Hugging Face ``BertForMaskedLM`` <-> this plugin's ``Bert``: config and state-dict mappings
(``archlab export format=hf`` / ``archlab import``; the parity tests).

Every projection is an ``nn.Linear`` in both, so only names change. Hugging Face's layout is ours with
``pre_norm=False`` (post-LN), ``position="learned"``, dense attention and ``ffn="mlp"``; the MLM decoder
is tied to the word embeddings and keeps its own bias.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from framework.interop import HFArchitecture, NotConvertible
from framework.interop.architecture import invert

from .config import BertConfig

_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}  # ours -> HF hidden_act
_FROM_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
                        "silu": "silu", "swish": "silu"}

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
        "mlm_head.decoder.weight": hf.get("cls.predictions.decoder.weight",
                                          hf["bert.embeddings.word_embeddings.weight"]),  # tied unless untied
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


def config_from_hf(c: Any, max_seq_len: int | None = None) -> dict[str, Any]:
    """BertConfig keyword arguments for a Hugging Face ``BertConfig`` (its position table fixes max_seq_len)."""
    activation = _FROM_HF_ACTIVATIONS.get(c.hidden_act)
    if activation is None:
        raise NotConvertible(f"hidden_act={c.hidden_act!r}: the bert plugin has {sorted(_FROM_HF_ACTIVATIONS)}")
    if getattr(c, "position_embedding_type", "absolute") != "absolute":
        raise NotConvertible(f"position_embedding_type={c.position_embedding_type!r}: only absolute positions map")
    if getattr(c, "is_decoder", False) or getattr(c, "add_cross_attention", False):
        raise NotConvertible("is_decoder / add_cross_attention: the bert plugin is an encoder")
    if max_seq_len is not None and max_seq_len != c.max_position_embeddings:
        raise NotConvertible(f"max_seq_len={max_seq_len}: BERT's learned position table fixes it at "
                             f"max_position_embeddings={c.max_position_embeddings}")
    return {"vocab_size": c.vocab_size, "d_model": c.hidden_size, "n_layers": c.num_hidden_layers,
            "n_heads": c.num_attention_heads, "d_ff": c.intermediate_size, "dropout": float(c.hidden_dropout_prob),
            "max_seq_len": c.max_position_embeddings, "position": "learned", "type_vocab_size": c.type_vocab_size,
            "norm_eps": c.layer_norm_eps, "activation": activation, "pre_norm": False,
            "tie_weights": bool(getattr(c, "tie_word_embeddings", True)), "ffn": "mlp", "attention": "dense"}


def hf_config(cfg: BertConfig) -> Any:
    """The ``transformers`` BertConfig of the same model."""
    import transformers

    layout = {"pre_norm": False, "position": "learned", "attention": "dense", "ffn": "mlp"}
    problems = [f"{k}={getattr(cfg, k)!r} (BERT: {v!r})" for k, v in layout.items() if getattr(cfg, k) != v]
    if problems:
        raise NotConvertible("no BERT counterpart: " + "; ".join(problems))
    return transformers.BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads, intermediate_size=cfg.ffn_hidden, hidden_act=_ACTIVATIONS[cfg.activation],
        hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
        max_position_embeddings=cfg.max_seq_len, type_vocab_size=cfg.type_vocab_size, layer_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_weights, pad_token_id=None,
    )


HF_BERT = HFArchitecture(
    "bert", "AutoModelForMaskedLM", hf_config, config_from_hf,
    lambda ours, cfg, template: invert(lambda hf: from_hf_state_dict(hf, cfg), template, ours),
    lambda hf, hf_cfg, cfg: from_hf_state_dict(hf, cfg),
)
