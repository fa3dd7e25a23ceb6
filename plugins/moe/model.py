"""Decoder-only LM whose FFNs are Mixtures of Experts (every ``moe_every_n``-th block), built from framework/nn blocks."""
from __future__ import annotations

import math

import torch
from torch import nn

from framework.generation import generate_with_kv_cache
from framework.nn import KVCache, SelfAttention, make_feedforward, make_norm
from framework.nn.attention_stats import collect_attention_stats
from framework.nn.decoder_block import PreNormBlock
from framework.nn.norms import residual_rms as rms_of
from framework.nn.moe import MoEFeedForward, collect_moe_stats
from framework.output import ModelOutput

from .config import MoEModelConfig


def _block(cfg: MoEModelConfig, moe: bool) -> PreNormBlock:
    attn = SelfAttention(
        cfg.d_model, cfg.n_heads, cfg.n_kv_heads, causal=True, bias=cfg.bias, dropout=cfg.dropout,
        position=cfg.position if cfg.position in ("rope", "alibi") else "none",
        max_seq_len=cfg.max_seq_len, rope_theta=cfg.rope_theta,
    )
    if moe:
        ffn: nn.Module = MoEFeedForward(cfg.d_model, cfg.moe, d_ff=cfg.ffn_hidden, dropout=cfg.dropout)
    else:  # dense layers use the experts' FFN kind and width
        kind = "swiglu" if cfg.moe.activation == "swiglu" else "mlp"
        ffn = make_feedforward(kind, cfg.d_model, cfg.ffn_hidden, "gelu", cfg.bias, cfg.dropout)
    norm = lambda: make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)  # noqa: E731
    return PreNormBlock(attn, ffn, norm(), norm(), cfg.dropout)


class MoELM(nn.Module):
    def __init__(self, cfg: MoEModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.position == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        moe_layers = set(cfg.moe_layers)
        self.blocks = nn.ModuleList(_block(cfg, i in moe_layers) for i in range(cfg.n_layers))
        self.final_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        total = sum(p.numel() for p in self.parameters())
        inactive = sum(b.ffn.inactive_params() for b in self.blocks if isinstance(b.ffn, MoEFeedForward))
        self.n_params_total, self.n_params_active = total, total - inactive

    @torch.no_grad()
    def _init_weights(self) -> None:
        std = self.config.init_std
        out_std = std / math.sqrt(2 * self.config.n_layers)  # GPT-2: residual output projections scaled down
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.normal_(block.attn.o_proj.weight, std=out_std)
            if isinstance(block.ffn, MoEFeedForward):
                block.ffn.init_weights(std, out_std)
            else:
                nn.init.normal_(block.ffn.down_proj.weight, std=out_std)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: list[KVCache] | None = None,
    ) -> ModelOutput:
        """input_ids: (B, T); attention_mask: (B, S) 1 = token, 0 = padding (S = cached + T)."""
        b, t = input_ids.shape
        offset = cache[0].length if cache else 0
        if self.pos_emb is not None and offset + t > self.config.max_seq_len:
            raise ValueError(f"sequence of {offset + t} tokens exceeds max_seq_len={self.config.max_seq_len}")
        x = self.tok_emb(input_ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(offset, offset + t, device=input_ids.device))
        x = self.drop(x)
        residual_rms, moe_outputs = [], []
        for i, block in enumerate(self.blocks):
            x, moe = block(x, attention_mask, cache[i] if cache else None)
            if moe is not None:
                moe_outputs.append(moe)
            residual_rms.append(rms_of(x))
        logits = self.lm_head(self.final_norm(x))  # (B, T, V)
        aux = sum((m.aux_loss for m in moe_outputs), logits.new_zeros((), dtype=torch.float32))
        stats = {"residual_rms": torch.stack(residual_rms), **collect_moe_stats(moe_outputs)}
        stats["moe_params_total"] = torch.tensor(float(self.n_params_total))
        stats["moe_params_active"] = torch.tensor(float(self.n_params_active))
        stats.update(collect_attention_stats([block.attn for block in self.blocks]))
        return ModelOutput(logits=logits, aux_loss=aux, stats=stats)

    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to (B, T) ``input_ids``; ``temperature=0`` is greedy."""
        return generate_with_kv_cache(
            self, input_ids, max_new_tokens, n_layers=len(self.blocks), max_seq_len=self.config.max_seq_len,
            temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
            use_cache=use_cache,
        )


def build_moe(cfg: MoEModelConfig) -> MoELM:
    return MoELM(cfg)
