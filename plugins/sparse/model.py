"""Decoder-only LM with sparse attention in every layer (sliding window, Sparse Transformer, Longformer,
BigBird, Reformer LSH); pre-norm GPT blocks otherwise."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from framework.generation import generate_with_kv_cache
from framework.nn import KVCache, make_feedforward, make_norm, sinusoidal_table
from framework.nn.attention_stats import collect_attention_stats
from framework.nn.sparse import SparseSelfAttention, receptive_field, union_mask
from framework.nn.sparse.picture import pattern_png, png_to_array
from framework.output import ModelOutput

from .config import SparseLMConfig


class Block(nn.Module):
    def __init__(self, cfg: SparseLMConfig, layer: int) -> None:
        super().__init__()
        self.attn_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.attn = SparseSelfAttention(
            cfg.d_model, cfg.n_heads, cfg.n_kv_heads, kind=cfg.attention, sparse=cfg.sparse, layer=layer,
            causal=True, bias=cfg.bias, position=cfg.position if cfg.position in ("rope", "alibi") else "none",
            max_seq_len=cfg.max_seq_len, rope_theta=cfg.rope_theta,
        )
        self.ffn_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.ffn = make_feedforward(cfg.ffn, cfg.d_model, cfg.ffn_hidden, cfg.activation, cfg.bias, cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None, cache: KVCache | None) -> torch.Tensor:
        x = x + self.resid_dropout(self.attn(self.attn_norm(x), attention_mask, cache))
        return x + self.ffn(self.ffn_norm(x))


class SparseLM(nn.Module):
    def __init__(self, cfg: SparseLMConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.position == "learned" else None
        if cfg.position == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(cfg.max_seq_len, cfg.d_model), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.final_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        for block in self.blocks:
            for proj in (block.attn.o_proj, block.ffn.down_proj):
                nn.init.normal_(proj.weight, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self._receptive: dict[int, float] = {}

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: list[KVCache] | None = None
    ) -> ModelOutput:
        """input_ids: (B, T); attention_mask: (B, S) 1 = token, 0 = padding (S = cached + T)."""
        b, t = input_ids.shape
        offset = cache[0].length if cache else 0
        if offset + t > self.config.max_seq_len and self.config.position in ("learned", "sinusoidal"):
            raise ValueError(f"sequence of {offset + t} tokens exceeds max_seq_len={self.config.max_seq_len}")
        x = self.tok_emb(input_ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(offset, offset + t, device=input_ids.device))
        elif self.config.position == "sinusoidal":
            x = x + self.pos_table[offset : offset + t].to(x.dtype)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, attention_mask, cache[i] if cache else None)
        logits = self.lm_head(self.final_norm(x))  # (B, T, V)
        stats = self._structure_stats(t) if cache is None else {}
        stats.update(collect_attention_stats([block.attn for block in self.blocks]))
        return ModelOutput(logits=logits, aux_loss=logits.new_zeros((), dtype=torch.float32), stats=stats)

    def _structure_stats(self, t: int) -> dict[str, torch.Tensor]:
        """Density per layer (every forward; cached per length for static patterns) and the effective
        receptive field of the last position after all layers, as a share of the t positions."""
        attns = [block.attn for block in self.blocks]
        stats = {"attn_density": torch.stack([a.last_density.float() for a in attns])}
        if self.config.attention != "lsh":
            if t not in self._receptive:
                self._receptive[t] = receptive_field([a.groups for a in attns], t) / t
            stats["attn_receptive_field"] = torch.tensor(self._receptive[t])
        return stats

    @torch.no_grad()
    def figures(self, t: int | None = None) -> dict[str, np.ndarray]:
        """The attention pattern of a short sequence (row = query, column = key), per head group of the
        first layers, as an image for W&B. Default length: 4 windows (64 to 256), so the pattern shows."""
        t = min(t or min(max(64, 4 * self.config.sparse.window), 256), self.config.max_seq_len)
        masks: dict[str, torch.Tensor] = {}
        first = self.blocks[0].attn
        if self.config.attention == "lsh":
            x = torch.randn(1, t, self.config.d_model, generator=torch.Generator().manual_seed(0))
            q = first.q_proj(x.to(first.q_proj.weight)).view(1, t, first.n_heads, first.head_dim).transpose(1, 2)
            from framework.nn.sparse.lsh import plan

            p = plan(q, first.rotations, first.sparse.chunk_size)
            masks["layer0 head0 (random input)"] = union_mask(p, True)[0, 0]
        else:
            n_layers = 2 if self.config.sparse.factorize == "layers" and len(self.blocks) > 1 else 1
            for i in range(n_layers):
                for h0, h1, pattern in self.blocks[i].attn.groups:
                    masks[f"layer{i} heads {h0}-{h1 - 1}: {pattern.name}"] = pattern.mask(t)
        png = pattern_png(masks, title=f"{self.config.attention}, t={t}")
        return {"attn/pattern": png_to_array(png)}

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
        LSH attention has no KV cache, so it always recomputes the (cropped) context."""
        # LSH attention has no KV cache: it always recomputes the (cropped) context.
        return generate_with_kv_cache(
            self, input_ids, max_new_tokens, n_layers=len(self.blocks), max_seq_len=self.config.max_seq_len,
            temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
            use_cache=use_cache and self.config.attention != "lsh",
        )


def build_sparse_lm(cfg: SparseLMConfig) -> SparseLM:
    return SparseLM(cfg)
