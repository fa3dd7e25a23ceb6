"""Hugging Face ``T5ForConditionalGeneration`` <-> this plugin's ``T5``: config and state-dict mappings
(``archlab export format=hf`` / ``archlab import``; the parity tests).

Only names change: every projection is a bias-free ``nn.Linear`` in both. The relative position bias
lives in the first block of each Hugging Face stack and is shared by the stack's layers, as here.
The dense FFNs only (``ffn=relu``: v1.0 ``wi``; ``ffn=gated_gelu``: v1.1 ``wi_0``/``wi_1``); Hugging Face
has no MoE T5.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from framework.interop import HFArchitecture, NotConvertible
from framework.interop.architecture import invert

from .config import T5Config

_FFN = {"relu": "relu", "gated_gelu": "gated-gelu"}  # ours -> HF feed_forward_proj (gated-gelu: tanh GELU)

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


def config_from_hf(c: Any, max_seq_len: int | None = None) -> dict[str, Any]:
    """T5Config keyword arguments for a Hugging Face ``T5Config`` (relative positions: ``max_seq_len`` is free)."""
    ffn = {v: k for k, v in _FFN.items()}.get(c.feed_forward_proj)
    if ffn is None:
        raise NotConvertible(f"feed_forward_proj={c.feed_forward_proj!r}: the t5 plugin has {sorted(_FFN.values())}")
    if c.d_kv * c.num_heads != c.d_model:
        raise NotConvertible(f"d_kv={c.d_kv} * num_heads={c.num_heads} != d_model={c.d_model}: the t5 plugin's heads "
                             "are d_model / n_heads")
    return {"vocab_size": c.vocab_size, "d_model": c.d_model, "n_layers": c.num_layers,
            "n_decoder_layers": c.num_decoder_layers, "n_heads": c.num_heads, "d_ff": c.d_ff,
            "dropout": float(c.dropout_rate), "max_seq_len": max_seq_len or 512,
            "relative_buckets": c.relative_attention_num_buckets,
            "relative_max_distance": c.relative_attention_max_distance, "ffn": ffn,
            # transformers 5 always ties the head and says with scale_decoder_outputs whether it is T5 v1.0's
            # scaled tied head (our tie_weights) or v1.1's unscaled one (ours untied: a copy of the embedding)
            "tie_weights": bool(getattr(c, "scale_decoder_outputs", c.tie_word_embeddings)),
            "norm_eps": c.layer_norm_epsilon,
            "pad_token_id": c.pad_token_id if c.pad_token_id is not None else 0,
            "decoder_start_token_id": c.decoder_start_token_id if c.decoder_start_token_id is not None else 0,
            "eos_token_id": c.eos_token_id if c.eos_token_id is not None else 1}


def hf_config(cfg: T5Config) -> Any:
    """The ``transformers`` T5Config of the same model (dense FFNs only: Hugging Face has no MoE T5)."""
    import transformers

    if cfg.ffn not in _FFN:
        raise NotConvertible(f"no T5 counterpart: ffn={cfg.ffn!r} (Hugging Face T5 has dense FFNs only: relu, "
                             "gated_gelu)")
    if not cfg.tie_weights and transformers.T5Config(tie_word_embeddings=False).tie_word_embeddings:
        raise NotConvertible(f"no T5 counterpart: tie_weights=False (an own output head); transformers "
                             f"{transformers.__version__} always ties T5's head to the embeddings")
    return transformers.T5Config(
        vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.d_model // cfg.n_heads, d_ff=cfg.d_ff or 4 * cfg.d_model,
        num_layers=cfg.n_layers, num_decoder_layers=cfg.decoder_layers, num_heads=cfg.n_heads,
        relative_attention_num_buckets=cfg.relative_buckets,
        relative_attention_max_distance=cfg.relative_max_distance, dropout_rate=cfg.dropout,
        layer_norm_epsilon=cfg.norm_eps, feed_forward_proj=_FFN[cfg.ffn], tie_word_embeddings=cfg.tie_weights,
        pad_token_id=cfg.pad_token_id, eos_token_id=cfg.eos_token_id, decoder_start_token_id=cfg.decoder_start_token_id,
    )


HF_T5 = HFArchitecture(
    "t5", "AutoModelForSeq2SeqLM", hf_config, config_from_hf,
    lambda ours, cfg, template: invert(lambda hf: from_hf_state_dict(hf, cfg), template, ours),
    lambda hf, hf_cfg, cfg: from_hf_state_dict(hf, cfg),
)
