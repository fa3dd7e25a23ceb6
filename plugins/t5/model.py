"""T5 (Raffel et al. 2020): encoder-decoder with RMSNorm pre-norm (no biases anywhere), a bucketed
relative position bias shared by all layers of a stack, ReLU or gated-GELU FFN (v1.1), tied or untied head."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

from framework.nn.cross_attention import MultiHeadAttention
from framework.nn.encoder_decoder import AttentionEncoderDecoder, DecoderBlock, EncoderBlock
from framework.nn.feedforward import GatedMLP, MLP
from framework.nn.moe import MoEFeedForward

from .config import T5Config
from .relative_position import RelativePositionBias


def _feedforward(cfg: T5Config) -> nn.Module:
    if cfg.ffn == "gated_gelu":
        return GatedMLP(cfg.d_model, cfg.ffn_hidden, "gelu_tanh", bias=False)
    return MLP(cfg.d_model, cfg.ffn_hidden, "relu", bias=False)


class FeedForward(nn.Module):
    """T5's FFN: dropout on the hidden activation (inside) and on the branch output (residual)."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.ff = _feedforward(cfg)
        self.hidden_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ff = self.ff
        if isinstance(ff, GatedMLP):
            h = ff.act(ff.gate_proj(x)) * ff.up_proj(x)
        else:
            h = ff.act(ff.up_proj(x))
        return ff.down_proj(self.hidden_dropout(h))


def _make_ffn(cfg: T5Config) -> nn.Module:
    if cfg.ffn == "moe":
        return MoEFeedForward(cfg.d_model, cfg.moe, cfg.ffn_hidden, cfg.dropout)
    return FeedForward(cfg)


def _attention(cfg: T5Config, **kind: bool) -> MultiHeadAttention:
    # No biases; scale 1.0: the 1/sqrt(d) is folded into the initialisation.
    return MultiHeadAttention(cfg.d_model, cfg.n_heads, bias=False, dropout=cfg.dropout, scale=1.0, **kind)


def _norm(cfg: T5Config) -> Callable[[], nn.Module]:
    return partial(nn.RMSNorm, cfg.d_model, eps=cfg.norm_eps)


def encoder_block(cfg: T5Config) -> EncoderBlock:
    return EncoderBlock(_attention(cfg), _make_ffn(cfg), _norm(cfg), cfg.dropout, pre_norm=True)


def decoder_block(cfg: T5Config) -> DecoderBlock:
    return DecoderBlock(_attention(cfg, causal=True), _attention(cfg, cross=True), _make_ffn(cfg), _norm(cfg),
                        cfg.dropout, pre_norm=True)


class T5(AttentionEncoderDecoder):
    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.config = cfg
        self.shared = nn.Embedding(cfg.vocab_size, cfg.d_model)
        kw = dict(num_buckets=cfg.relative_buckets, max_distance=cfg.relative_max_distance)
        self.enc_bias = RelativePositionBias(cfg.n_heads, bidirectional=True, **kw)
        self.dec_bias = RelativePositionBias(cfg.n_heads, bidirectional=False, **kw)
        self.encoder = nn.ModuleList(encoder_block(cfg) for _ in range(cfg.n_layers))
        self.decoder = nn.ModuleList(decoder_block(cfg) for _ in range(cfg.decoder_layers))
        self.enc_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.dec_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        if cfg.tie_weights:
            self.lm_head.weight = self.shared.weight

    @torch.no_grad()
    def _init_weights(self) -> None:
        """T5's scheme: stds that keep unscaled dot products and residual sums at unit scale."""
        cfg, f = self.config, self.config.init_factor
        d, hd = cfg.d_model, cfg.n_heads * cfg.head_dim
        nn.init.normal_(self.shared.weight, std=f * 1.0)
        nn.init.normal_(self.lm_head.weight, std=f * d**-0.5)
        for bias in (self.enc_bias, self.dec_bias):
            nn.init.normal_(bias.embedding.weight, std=f * d**-0.5)
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                nn.init.normal_(module.q_proj.weight, std=f * (d * cfg.head_dim) ** -0.5)
                nn.init.normal_(module.k_proj.weight, std=f * d**-0.5)
                nn.init.normal_(module.v_proj.weight, std=f * d**-0.5)
                nn.init.normal_(module.o_proj.weight, std=f * hd**-0.5)
            elif isinstance(module, (MLP, GatedMLP)):
                for proj in (module.up_proj, getattr(module, "gate_proj", None)):
                    if proj is not None:
                        nn.init.normal_(proj.weight, std=f * d**-0.5)
                nn.init.normal_(module.down_proj.weight, std=f * cfg.ffn_hidden**-0.5)
            elif isinstance(module, MoEFeedForward):  # routed experts: stacked weights, same stds
                module.init_weights(f * d**-0.5, out_std=f * module.d_ff**-0.5)

    # ---- T5's parts of encode / decode (framework.nn.encoder_decoder) ---------------------------
    def embed_source(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.shared(input_ids))  # (B, S, C)

    def embed_target(self, decoder_input_ids: torch.Tensor, offset: int) -> torch.Tensor:
        return self.drop(self.shared(decoder_input_ids))  # (B, T, C): positions enter through the bias

    def encoder_bias(self, s: int) -> torch.Tensor:
        return self.enc_bias(s, s)  # (1, H, S, S), shared by every layer

    def decoder_bias(self, t: int, s: int, offset: int) -> torch.Tensor:
        return self.dec_bias(t, s, offset)  # (1, H, T, offset + T): follows the cache offset

    def encoder_output(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.enc_norm(x))

    def decoder_output(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.dec_norm(x))
        if self.config.tie_weights:
            x = x * self.config.d_model**-0.5  # tied head: rescale, as T5 v1.0 does
        return self.lm_head(x)  # (B, T, V)

    def own_stats(self) -> dict[str, torch.Tensor]:
        return {"rel_bias_encoder": self.enc_bias.bucket_means(), "rel_bias_decoder": self.dec_bias.bucket_means()}


def build_t5(cfg: T5Config) -> T5:
    return T5(cfg)
