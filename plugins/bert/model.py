"""Encoder-only transformer as in BERT (Devlin et al. 2019), laid out like Hugging Face's BertForMaskedLM:

    embeddings  = LayerNorm(token + position + token_type)          (pre-norm: no LayerNorm here)
    block       = norm(x + attn(x)), then norm(x + ffn(x))            (pre-norm: x + f(norm(x)))
    MLM head    = decoder(LayerNorm(act(dense(h)))) + bias, decoder tied to the token embeddings

Attention is bidirectional (``SelfAttention(causal=False)``); padding keys are masked out, so padding
never changes the outputs at real tokens.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from framework.nn import make_feedforward
from framework.nn.norms import residual_rms as rms_of
from framework.nn.moe import MoEFeedForward, MoEOutput, collect_moe_stats
from framework.nn.sparse import make_attention
from framework.nn.feedforward import activation_fn
from framework.output import ModelOutput
from framework.stack.stats import shared_vectors

from .config import BertConfig


class Block(nn.Module):
    """One encoder block: bidirectional self-attention and a GELU MLP, post-LN (BERT) or pre-norm."""

    def __init__(self, cfg: BertConfig, layer: int = 0) -> None:
        super().__init__()
        self.pre_norm = cfg.pre_norm
        # Dense SelfAttention, or a bidirectional sparse kind when cfg.attention names one.
        self.attn = make_attention(
            cfg.attention, cfg.sparse, layer, cfg.d_model, cfg.n_heads, causal=False, bias=True, dropout=cfg.dropout,
            position="rope" if cfg.position == "rope" else "none", max_seq_len=cfg.max_seq_len,
        )
        self.attn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = (MoEFeedForward(cfg.d_model, cfg.moe, cfg.ffn_hidden, cfg.dropout) if cfg.ffn == "moe" else
                    make_feedforward("mlp", cfg.d_model, cfg.ffn_hidden, cfg.activation, True, cfg.dropout))
        self.ffn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, MoEOutput | None]:
        """Returns the new hidden states and the MoE FFN's record (aux loss, stats; None if dense)."""
        if self.pre_norm:
            x = x + self.resid_dropout(self.attn(self.attn_norm(x), attention_mask))
            h, moe = self._ffn(self.ffn_norm(x), attention_mask)
            return x + h, moe
        x = self.attn_norm(x + self.resid_dropout(self.attn(x, attention_mask)))
        h, moe = self._ffn(x, attention_mask)
        return self.ffn_norm(x + h), moe

    def _ffn(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, MoEOutput | None]:
        if isinstance(self.ffn, MoEFeedForward):
            moe = self.ffn(x, attention_mask)  # padding tokens are never routed
            return moe.output, moe
        return self.ffn(x), None


class MLMHead(nn.Module):
    """BERT's prediction head: a dense + activation + LayerNorm transform, then the vocabulary projection
    (tied to the token embeddings when ``tie_weights``) plus a per-token output bias."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.act = activation_fn(cfg.activation)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (..., C) -> logits (..., V)."""
        return F.linear(self.norm(self.act(self.dense(h))), self.decoder.weight, self.bias)


class Bert(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.position == "learned" else None
        self.type_emb = nn.Embedding(cfg.type_vocab_size, cfg.d_model) if cfg.type_vocab_size else None
        # Post-LN normalises the embeddings (BERT); pre-norm blocks normalise their inputs themselves.
        self.emb_norm = nn.Identity() if cfg.pre_norm else nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        # Post-LN blocks end in a norm already; pre-norm needs a final one.
        self.final_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.pre_norm else nn.Identity()
        self.mlm_head = MLMHead(cfg)
        self.apply(self._init_weights)
        if cfg.tie_weights:
            self.mlm_head.decoder.weight = self.tok_emb.weight

    def _init_weights(self, module: nn.Module) -> None:
        # BERT: N(0, init_std) for every matrix, zero biases, unit LayerNorms (PyTorch's default).
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, MoEFeedForward):  # stacked expert weights are not nn.Linear modules
            module.init_weights(self.config.init_std)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[MoEOutput]]:
        """The encoder's last hidden states (B, T, C), the residual RMS after each block, MoE records."""
        _, t = input_ids.shape
        if t > self.config.max_seq_len and self.pos_emb is not None:
            raise ValueError(f"sequence of {t} tokens exceeds max_seq_len={self.config.max_seq_len} of the position table")
        x = self.tok_emb(input_ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(t, device=input_ids.device))
        if self.type_emb is not None:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            x = x + self.type_emb(types)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given, but the model has type_vocab_size=0")
        x = self.drop(self.emb_norm(x))
        residual_rms, moe_outputs = [], []
        for block in self.blocks:
            x, moe = block(x, attention_mask)
            if moe is not None:
                moe_outputs.append(moe)
            residual_rms.append(rms_of(x))
        return self.final_norm(x), residual_rms, moe_outputs

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        predict_mask: torch.Tensor | None = None,
    ) -> ModelOutput:
        """input_ids: (B, T); attention_mask: (B, T) 1 = token, 0 = padding; token_type_ids: (B, T) segments.

        Returns logits (B, T, V) at every position, or with ``predict_mask`` (B, T) bool (the positions the
        masked-LM loss scores, as the training loop passes it) (N, V) at those positions only: the head's
        dense layer, norm and vocabulary projection then run on ~15% of the tokens (as in MosaicBERT)."""
        h, residual_rms, moe_outputs = self.hidden_states(input_ids, attention_mask, token_type_ids)
        if predict_mask is not None:
            h = h[predict_mask]  # (N, C)
        logits = self.mlm_head(h)  # (B, T, V) or (N, V)
        # Shared statistics in the decoder stack's key scheme (one value per layer; the core logs them):
        # resid/rms, attn/density and, on validation batches, attn/entropy and attn/topk_mass.
        stats = {"resid/rms": torch.stack(residual_rms), **shared_vectors([b.attn.mixer_stats() for b in self.blocks])}
        stats.update(collect_moe_stats(moe_outputs))
        aux = sum((m.aux_loss for m in moe_outputs), logits.new_zeros((), dtype=torch.float32))
        return ModelOutput(logits=logits, aux_loss=aux, stats=stats, scored=predict_mask)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pooling: str | None = None,
    ) -> torch.Tensor:
        """One (B, d_model) embedding per sequence for downstream use: ``cls`` takes the first position's
        state, ``mean`` averages over real tokens (attention_mask 1). ``pooling`` None = config.pooling."""
        pooling = pooling or self.config.pooling
        h, _, _ = self.hidden_states(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        if pooling == "cls":
            return h[:, 0]
        if pooling == "mean":
            if attention_mask is None:
                return h.mean(1)
            weights = attention_mask.to(h.dtype)[..., None]  # (B, T, 1)
            return (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        raise ValueError(f"pooling: {pooling!r} is not one of 'cls', 'mean'")


def build_bert(cfg: BertConfig) -> Bert:
    return Bert(cfg)
