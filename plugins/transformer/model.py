"""The original Transformer (Vaswani et al. 2017): encoder-decoder with sinusoidal positions,
post-norm residual blocks ``LayerNorm(x + Dropout(sublayer(x)))``, ReLU FFN, one embedding matrix
shared by source, target and output projection (scaled by sqrt(d_model) on input), label smoothing."""
from __future__ import annotations

import math

import torch
from torch import nn

from framework.nn import MLP, sinusoidal_table
from framework.nn.attention_stats import collect_attention_stats
from framework.nn.cross_attention import AttentionMask, DecoderCache, MultiHeadAttention, build_mask
from framework.output import ModelOutput
from framework.seq2seq_generation import generate_seq2seq

from .config import TransformerConfig


class EncoderBlock(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, dropout=cfg.dropout)
        self.attn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = MLP(cfg.d_model, cfg.ffn_hidden, "relu")
        self.ffn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        x = self.attn_norm(x + self.drop(self.attn(x, mask=mask)))
        return self.ffn_norm(x + self.drop(self.ffn(x)))


class DecoderBlock(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, causal=True, dropout=cfg.dropout)
        self.self_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cross=True, dropout=cfg.dropout)
        self.cross_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = MLP(cfg.d_model, cfg.ffn_hidden, "relu")
        self.ffn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, self_mask: AttentionMask, memory: torch.Tensor, cross_mask: AttentionMask,
        cache: DecoderCache | None, i: int,
    ) -> torch.Tensor:
        self_cache = cache.self_attn[i] if cache is not None else None
        cross_cache = cache.cross_attn[i] if cache is not None else None
        x = self.self_norm(x + self.drop(self.self_attn(x, mask=self_mask, cache=self_cache)))
        x = self.cross_norm(x + self.drop(self.cross_attn(x, memory, mask=cross_mask, cache=cross_cache)))
        return self.ffn_norm(x + self.drop(self.ffn(x)))


class Transformer(nn.Module):
    is_encoder_decoder = True

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.src_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.tgt_emb = self.src_emb if cfg.share_embeddings else nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.register_buffer("pos_table", sinusoidal_table(cfg.max_seq_len, cfg.d_model), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_layers))
        self.decoder = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.decoder_layers))
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

    # ---- the two halves (also the generation protocol of framework.seq2seq_generation) ---------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self._embed(self.src_emb, input_ids)
        s = input_ids.shape[1]
        # Padding mask built once, shared by every layer.
        mask = build_mask(s, s, key_mask=attention_mask, dtype=x.dtype, device=x.device)
        for block in self.encoder:
            x = block(x, mask)
        return x  # post-norm blocks already end in LayerNorm

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        cache: DecoderCache | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        offset = cache.length if cache is not None else 0
        x = self._embed(self.tgt_emb, decoder_input_ids, offset)
        t = decoder_input_ids.shape[1]
        self_mask = build_mask(t, offset + t, causal=True, key_mask=decoder_attention_mask,
                               dtype=x.dtype, device=x.device)
        cross_mask = build_mask(t, memory.shape[1], key_mask=memory_mask, dtype=x.dtype, device=x.device)
        for i, block in enumerate(self.decoder):
            x = block(x, self_mask, memory, cross_mask, cache, i)
        return self.lm_head(x)  # (B, T, V)

    def new_cache(self) -> DecoderCache:
        return DecoderCache(len(self.decoder))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
    ) -> ModelOutput:
        """input_ids/attention_mask: (B, S) source; decoder_input_ids/decoder_attention_mask: (B, T)
        (start token + target[:-1]). Returns logits (B, T, V) aligned with the target."""
        if decoder_input_ids is None:
            raise ValueError(
                "transformer: decoder_input_ids is required (seq2seq batches carry it; see framework/data/seq2seq.py)"
            )
        memory = self.encode(input_ids, attention_mask)
        logits = self.decode(decoder_input_ids, memory, attention_mask, None, decoder_attention_mask)
        stats: dict[str, torch.Tensor] = {}
        stats.update(_prefixed("enc_", collect_attention_stats([b.attn for b in self.encoder])))
        stats.update(_prefixed("dec_self_", collect_attention_stats([b.self_attn for b in self.decoder])))
        stats.update(_prefixed("cross_", collect_attention_stats([b.cross_attn for b in self.decoder])))
        return ModelOutput(logits=logits, aux_loss=self._smoothing_loss(logits, decoder_attention_mask), stats=stats)

    def _smoothing_loss(self, logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Label smoothing as an auxiliary term, since forward never sees the labels.

        The smoothed loss is (1 - e) * CE + e * U, with U the cross-entropy against the uniform
        distribution. The core adds aux_loss to CE, so aux = e / (1 - e) * U makes the total
        ((1 - e) * CE + e * U) / (1 - e): the smoothed loss up to a constant factor, while train/loss
        and val/ppl stay the plain cross-entropy. Positions where ``mask`` is 0 (target padding) are skipped.
        """
        eps = self.config.label_smoothing
        if eps == 0 or not self.training:
            return logits.new_zeros((), dtype=torch.float32)
        uniform_ce = -logits.float().log_softmax(-1).mean(-1)  # (B, T)
        if mask is not None:
            weight = mask.float()
            uniform_ce = (uniform_ce * weight).sum() / weight.sum().clamp(min=1)
        else:
            uniform_ce = uniform_ce.mean()
        return eps / (1 - eps) * uniform_ce

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        attention_mask: torch.Tensor | None = None,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Decode a target for each (B, S) source: greedy by default, sampling with temperature > 0,
        beam search with num_beams > 1. Returns (B, T) tokens after the start token (pad after EOS)."""
        was_training = self.training
        self.eval()
        cfg = self.config
        max_new_tokens = min(max_new_tokens, cfg.max_seq_len)  # the position table bounds the decoder input
        out = generate_seq2seq(
            self, input_ids, max_new_tokens, decoder_start_token_id=cfg.decoder_start_token_id,
            eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, attention_mask=attention_mask,
            temperature=temperature, top_k=top_k, top_p=top_p, num_beams=num_beams, length_penalty=length_penalty,
            use_cache=use_cache, generator=generator,
        )
        self.train(was_training)
        return out


def _prefixed(prefix: str, stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in stats.items()}


def build_transformer(cfg: TransformerConfig) -> Transformer:
    return Transformer(cfg)
