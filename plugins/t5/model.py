"""T5 (Raffel et al. 2020): encoder-decoder with RMSNorm pre-norm (no biases anywhere), a bucketed
relative position bias shared by all layers of a stack, ReLU or gated-GELU FFN (v1.1), tied or untied head."""
from __future__ import annotations

import torch
from torch import nn

from framework.nn.moe import MoEFeedForward, MoEOutput, collect_moe_stats
from framework.nn.attention_stats import collect_attention_stats
from framework.nn.cross_attention import AttentionMask, DecoderCache, MultiHeadAttention, build_mask
from framework.nn.feedforward import GatedMLP, MLP
from framework.nn.relative_position import RelativePositionBias
from framework.output import ModelOutput
from framework.seq2seq_generation import generate_seq2seq

from .config import T5Config


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


def _apply_ffn(
    ffn: nn.Module, x: torch.Tensor, token_mask: torch.Tensor | None, moe_records: list[MoEOutput] | None
) -> torch.Tensor:
    """Dense FFN, or MoE FFN whose record (aux loss, stats) is appended to ``moe_records``."""
    if isinstance(ffn, MoEFeedForward):
        if token_mask is not None and token_mask.shape[1] != x.shape[1]:
            token_mask = None  # cached decoding: the mask covers past positions too
        moe = ffn(x, token_mask)  # padding tokens are never routed
        if moe_records is not None:
            moe_records.append(moe)
        return moe.output
    return ffn(x)


class EncoderBlock(nn.Module):
    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, bias=False, dropout=cfg.dropout, scale=1.0)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = _make_ffn(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, mask: AttentionMask, token_mask: torch.Tensor | None = None,
        moe_records: list[MoEOutput] | None = None,
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), mask=mask))
        return x + self.drop(_apply_ffn(self.ffn, self.ffn_norm(x), token_mask, moe_records))


class DecoderBlock(nn.Module):
    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.self_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.self_attn = MultiHeadAttention(
            cfg.d_model, cfg.n_heads, causal=True, bias=False, dropout=cfg.dropout, scale=1.0
        )
        self.cross_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.cross_attn = MultiHeadAttention(
            cfg.d_model, cfg.n_heads, cross=True, bias=False, dropout=cfg.dropout, scale=1.0
        )
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = _make_ffn(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, self_mask: AttentionMask, memory: torch.Tensor, cross_mask: AttentionMask,
        cache: DecoderCache | None, i: int, token_mask: torch.Tensor | None = None,
        moe_records: list[MoEOutput] | None = None,
    ) -> torch.Tensor:
        self_cache = cache.self_attn[i] if cache is not None else None
        cross_cache = cache.cross_attn[i] if cache is not None else None
        x = x + self.drop(self.self_attn(self.self_norm(x), mask=self_mask, cache=self_cache))
        x = x + self.drop(self.cross_attn(self.cross_norm(x), memory, mask=cross_mask, cache=cross_cache))
        return x + self.drop(_apply_ffn(self.ffn, self.ffn_norm(x), token_mask, moe_records))


class T5(nn.Module):
    is_encoder_decoder = True

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.config = cfg
        self.shared = nn.Embedding(cfg.vocab_size, cfg.d_model)
        kw = dict(num_buckets=cfg.relative_buckets, max_distance=cfg.relative_max_distance)
        self.enc_bias = RelativePositionBias(cfg.n_heads, bidirectional=True, **kw)
        self.dec_bias = RelativePositionBias(cfg.n_heads, bidirectional=False, **kw)
        self.encoder = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_layers))
        self.decoder = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.decoder_layers))
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

    # ---- the two halves (also the generation protocol of framework.seq2seq_generation) ---------
    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        moe_records: list[MoEOutput] | None = None,
    ) -> torch.Tensor:
        """(B, S) source ids -> (B, S, C) encoder output (ffn=moe: routing records go to moe_records)."""
        x = self.drop(self.shared(input_ids))
        s = input_ids.shape[1]
        # Relative bias (1, H, S, S) plus padding, built once and shared by every layer.
        mask = build_mask(s, s, key_mask=attention_mask, position_bias=self.enc_bias(s, s),
                          dtype=x.dtype, device=x.device)
        for block in self.encoder:
            x = block(x, mask, attention_mask, moe_records)
        return self.drop(self.enc_norm(x))

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        cache: DecoderCache | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        moe_records: list[MoEOutput] | None = None,
    ) -> torch.Tensor:
        """(B, T) decoder inputs against (B, S, C) memory -> (B, T, V) logits. With a cache the inputs
        continue the cached positions."""
        t = decoder_input_ids.shape[1]
        offset = cache.length if cache is not None else 0
        x = self.drop(self.shared(decoder_input_ids))
        # Built once per call, shared by every layer: causal + relative bias (1, H, T, offset + T), and cross.
        self_mask = build_mask(t, offset + t, causal=True, key_mask=decoder_attention_mask,
                               position_bias=self.dec_bias(t, offset + t, offset), dtype=x.dtype,
                               device=x.device)
        cross_mask = build_mask(t, memory.shape[1], key_mask=memory_mask, dtype=x.dtype, device=x.device)
        for i, block in enumerate(self.decoder):
            x = block(x, self_mask, memory, cross_mask, cache, i, decoder_attention_mask, moe_records)
        x = self.drop(self.dec_norm(x))
        if self.config.tie_weights:
            x = x * self.config.d_model**-0.5  # tied head: rescale, as T5 v1.0 does
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
            raise ValueError("t5: decoder_input_ids is required (seq2seq batches carry it: framework/data/seq2seq.py)")
        moe_records: list[MoEOutput] = []  # ffn=moe: encoder then decoder layers
        memory = self.encode(input_ids, attention_mask, moe_records)
        logits = self.decode(decoder_input_ids, memory, attention_mask, None, decoder_attention_mask, moe_records)
        stats = {"rel_bias_encoder": self.enc_bias.bucket_means(), "rel_bias_decoder": self.dec_bias.bucket_means()}
        stats.update(_prefixed("enc_", collect_attention_stats([b.attn for b in self.encoder])))
        stats.update(_prefixed("dec_self_", collect_attention_stats([b.self_attn for b in self.decoder])))
        stats.update(_prefixed("cross_", collect_attention_stats([b.cross_attn for b in self.decoder])))
        stats.update(collect_moe_stats(moe_records))
        aux = sum((m.aux_loss for m in moe_records), logits.new_zeros((), dtype=torch.float32))
        return ModelOutput(logits=logits, aux_loss=aux, stats=stats)

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


def build_t5(cfg: T5Config) -> T5:
    return T5(cfg)
