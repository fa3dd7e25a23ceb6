"""The original Transformer (Vaswani et al. 2017): encoder-decoder with sinusoidal positions,
post-norm residual blocks ``LayerNorm(x + Dropout(sublayer(x)))``, ReLU FFN, one embedding matrix
shared by source, target and output projection (scaled by sqrt(d_model) on input); label smoothing (the
paper's 0.1) is the core's ``loss.label_smoothing``, not an auxiliary loss here."""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from framework.nn import MLP, sinusoidal_table
from framework.nn.cross_attention import MultiHeadAttention
from framework.nn.encoder_decoder import AttentionEncoderDecoder, DecoderBlock, EncoderBlock

from .config import TransformerConfig


def encoder_block(cfg: TransformerConfig) -> EncoderBlock:
    return EncoderBlock(MultiHeadAttention(cfg.d_model, cfg.n_heads, dropout=cfg.dropout),
                        MLP(cfg.d_model, cfg.ffn_hidden, "relu"), partial(nn.LayerNorm, cfg.d_model, eps=cfg.norm_eps),
                        cfg.dropout, pre_norm=False)


def decoder_block(cfg: TransformerConfig) -> DecoderBlock:
    return DecoderBlock(MultiHeadAttention(cfg.d_model, cfg.n_heads, causal=True, dropout=cfg.dropout),
                        MultiHeadAttention(cfg.d_model, cfg.n_heads, cross=True, dropout=cfg.dropout),
                        MLP(cfg.d_model, cfg.ffn_hidden, "relu"), partial(nn.LayerNorm, cfg.d_model, eps=cfg.norm_eps),
                        cfg.dropout, pre_norm=False)


class Transformer(AttentionEncoderDecoder):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.src_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.tgt_emb = self.src_emb if cfg.share_embeddings else nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.register_buffer("pos_table", sinusoidal_table(cfg.max_seq_len, cfg.d_model), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(encoder_block(cfg) for _ in range(cfg.n_layers))
        self.decoder = nn.ModuleList(decoder_block(cfg) for _ in range(cfg.decoder_layers))
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        if cfg.share_embeddings:
            self.lm_head.weight = self.tgt_emb.weight

    @torch.no_grad()
    def _init_weights(self) -> None:
        """Xavier-uniform linears (as in the reference tensor2tensor code); embeddings with std
        d_model^-0.5, so after the sqrt(d_model) input scaling tokens and positions have similar size."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for emb in {id(e): e for e in (self.src_emb, self.tgt_emb)}.values():
            nn.init.normal_(emb.weight, std=self.config.d_model**-0.5)

    def _embed(self, emb: nn.Embedding, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        t = ids.shape[1]
        if offset + t > self.config.max_seq_len:
            raise ValueError(f"sequence of {offset + t} tokens exceeds max_seq_len={self.config.max_seq_len}")
        x = emb(ids) * math.sqrt(self.config.d_model) + self.pos_table[offset : offset + t].to(emb.weight.dtype)
        return self.drop(x)  # (B, T, C)

    # ---- the Transformer's parts of encode / decode (framework.nn.encoder_decoder) --------------
    def embed_source(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._embed(self.src_emb, input_ids)

    def embed_target(self, decoder_input_ids: torch.Tensor, offset: int) -> torch.Tensor:
        return self._embed(self.tgt_emb, decoder_input_ids, offset)

    def encoder_output(self, x: torch.Tensor) -> torch.Tensor:
        return x  # post-norm blocks already end in LayerNorm

    def decoder_output(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(x)  # (B, T, V)

    def max_decoder_positions(self) -> int:
        return self.config.max_seq_len  # the position table bounds the decoder input


def build_transformer(cfg: TransformerConfig) -> Transformer:
    return Transformer(cfg)
