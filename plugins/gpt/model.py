"""Decoder-only transformer: GPT-2 by default, Llama by preset (RoPE, RMSNorm, SwiGLU, GQA, no bias)."""
from __future__ import annotations

import math

import torch
from torch import nn

from framework.generation import generate_with_kv_cache
from framework.nn import KVCache, make_feedforward, make_norm, sinusoidal_table
from framework.nn.attention_stats import collect_attention_stats
from framework.nn.sparse import make_attention
from framework.nn.norms import residual_rms as rms_of
from framework.nn.moe import MoEFeedForward, MoEOutput, collect_moe_stats
from framework.output import ModelOutput

from .config import GPTConfig


class Block(nn.Module):
    """One transformer block; pre-norm: x + f(norm(x)); post-norm: norm(x + f(x))."""

    def __init__(self, cfg: GPTConfig, layer: int = 0) -> None:
        super().__init__()
        self.pre_norm = cfg.pre_norm
        self.attn_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        # Dense SelfAttention, or SparseSelfAttention when cfg.attention names a sparse kind.
        self.attn = make_attention(
            cfg.attention, cfg.sparse, layer, cfg.d_model, cfg.n_heads, cfg.n_kv_heads,
            causal=True, bias=cfg.bias, dropout=cfg.dropout,
            position=cfg.position if cfg.position in ("rope", "alibi") else "none",
            max_seq_len=cfg.max_seq_len, rope_theta=cfg.rope_theta,
        )
        self.ffn_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.ffn = (MoEFeedForward(cfg.d_model, cfg.moe, cfg.ffn_hidden, cfg.dropout) if cfg.ffn == "moe" else
                    make_feedforward(cfg.ffn, cfg.d_model, cfg.ffn_hidden, cfg.activation, cfg.bias, cfg.dropout))
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None, cache: KVCache | None
    ) -> tuple[torch.Tensor, MoEOutput | None]:
        """Returns the new residual stream and the MoE FFN's record (aux loss, stats; None if dense)."""
        if self.pre_norm:
            x = x + self.resid_dropout(self.attn(self.attn_norm(x), attention_mask, cache))
            h, moe = self._ffn(self.ffn_norm(x), attention_mask)
            return x + h, moe
        x = self.attn_norm(x + self.resid_dropout(self.attn(x, attention_mask, cache)))
        h, moe = self._ffn(x, attention_mask)
        return self.ffn_norm(x + h), moe

    def _ffn(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, MoEOutput | None]:
        if isinstance(self.ffn, MoEFeedForward):
            moe = self.ffn(x, attention_mask)
            return moe.output, moe
        return self.ffn(x), None


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.position == "learned" else None
        if cfg.position == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(cfg.max_seq_len, cfg.d_model), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        # Post-norm blocks end in a norm already; pre-norm needs a final one.
        self.final_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias) if cfg.pre_norm else nn.Identity()
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        # GPT-2: residual output projections scaled by 1/sqrt(2 * n_layers).
        for block in self.blocks:
            out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
            nn.init.normal_(block.attn.o_proj.weight, std=out_std)
            if isinstance(block.ffn, MoEFeedForward):  # router and experts: same normal init, scaled outputs
                block.ffn.init_weights(cfg.init_std, out_std)
            else:
                nn.init.normal_(block.ffn.down_proj.weight, std=out_std)
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: list[KVCache] | None = None,
    ) -> ModelOutput:
        """input_ids: (B, T); attention_mask: (B, S) 1 = token, 0 = padding (S = cached + T)."""
        b, t = input_ids.shape
        offset = cache[0].length if cache else 0
        if offset + t > self.config.max_seq_len and self.config.position in ("learned", "sinusoidal"):
            raise ValueError(
                f"sequence of {offset + t} tokens exceeds max_seq_len={self.config.max_seq_len} of the position table"
            )
        x = self.tok_emb(input_ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(offset, offset + t, device=input_ids.device))
        elif self.config.position == "sinusoidal":
            x = x + self.pos_table[offset : offset + t].to(x.dtype)
        x = self.drop(x)
        residual_rms, moe_outputs = [], []
        for i, block in enumerate(self.blocks):
            x, moe = block(x, attention_mask, cache[i] if cache else None)
            if moe is not None:
                moe_outputs.append(moe)
            residual_rms.append(rms_of(x))
        logits = self.lm_head(self.final_norm(x))  # (B, T, V)
        stats = {"residual_rms": torch.stack(residual_rms), **collect_moe_stats(moe_outputs)}
        aux = sum((m.aux_loss for m in moe_outputs), logits.new_zeros((), dtype=torch.float32))
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
        """Append ``max_new_tokens`` sampled tokens to (B, T) ``input_ids``; ``temperature=0`` is greedy.

        With ``use_cache`` each step feeds one token against the KV cache; without it each step
        recomputes the whole (cropped) context. Contexts longer than ``max_seq_len`` keep their last
        ``max_seq_len`` tokens in both modes (the cache is rebuilt when it would overflow).
        """
        # LSH attention has no KV cache: it always recomputes the (cropped) context.
        return generate_with_kv_cache(
            self, input_ids, max_new_tokens, n_layers=len(self.blocks), max_seq_len=self.config.max_seq_len,
            temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
            use_cache=use_cache and self.config.attention != "lsh",
        )


def build_gpt(cfg: GPTConfig) -> GPT:
    return GPT(cfg)
