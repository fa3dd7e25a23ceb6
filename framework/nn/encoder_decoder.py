"""The skeleton of an attention encoder-decoder: encoder and decoder blocks, and a base model holding the
encode / decode plumbing (masks built once per stack, per-layer caches) and ``generate``.

What stays each architecture's own: its attention and FFN modules and norm (passed to the blocks),
pre- or post-norm residuals, embeddings and positions, the bias each stack adds to its attention
scores, the final norm and head, and the statistics of its own (``own_stats``).

    pre-norm   x + Dropout(sublayer(norm(x)))
    post-norm  norm(x + Dropout(sublayer(x)))
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..generation.seq2seq import Seq2SeqGenerateMixin
from .attention_stats import collect_attention_stats
from .cross_attention import AttentionMask, DecoderCache, MultiHeadAttention, build_mask
from .norms import residual_rms
from .moe import MoEFeedForward, MoEOutput, collect_moe_stats
from ..output import ModelOutput


def apply_ffn(
    ffn: nn.Module, x: torch.Tensor, token_mask: torch.Tensor | None = None,
    moe_records: list[MoEOutput] | None = None,
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


class _Residual(nn.Module):
    """Residual branches with dropout (``self.drop``, set by the block), pre- or post-norm."""

    drop: nn.Dropout

    def __init__(self, pre_norm: bool) -> None:
        super().__init__()
        self.pre_norm = pre_norm

    def residual(
        self, x: torch.Tensor, norm: nn.Module, sublayer: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        if self.pre_norm:
            return x + self.drop(sublayer(norm(x)))
        return norm(x + self.drop(sublayer(x)))


class EncoderBlock(_Residual):
    """Self-attention, then FFN. Submodules are registered in the order the data meets them (pre-norm:
    the norm first), as the plugins that built their own blocks did."""

    def __init__(
        self, attn: MultiHeadAttention, ffn: nn.Module, norm: Callable[[], nn.Module], dropout: float,
        pre_norm: bool,
    ) -> None:
        super().__init__(pre_norm)
        if pre_norm:
            self.attn_norm, self.attn, self.ffn_norm, self.ffn = norm(), attn, norm(), ffn
        else:
            self.attn, self.attn_norm, self.ffn, self.ffn_norm = attn, norm(), ffn, norm()
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: AttentionMask, token_mask: torch.Tensor | None = None,
        moe_records: list[MoEOutput] | None = None,
    ) -> torch.Tensor:
        x = self.residual(x, self.attn_norm, lambda h: self.attn(h, mask=mask))
        return self.residual(x, self.ffn_norm, lambda h: apply_ffn(self.ffn, h, token_mask, moe_records))


class DecoderBlock(_Residual):
    """Causal self-attention (cached), cross-attention to the encoder output (cached), then FFN."""

    def __init__(
        self, self_attn: MultiHeadAttention, cross_attn: MultiHeadAttention, ffn: nn.Module,
        norm: Callable[[], nn.Module], dropout: float, pre_norm: bool,
    ) -> None:
        super().__init__(pre_norm)
        if pre_norm:
            self.self_norm, self.self_attn, self.cross_norm, self.cross_attn = norm(), self_attn, norm(), cross_attn
            self.ffn_norm, self.ffn = norm(), ffn
        else:
            self.self_attn, self.self_norm, self.cross_attn, self.cross_norm = self_attn, norm(), cross_attn, norm()
            self.ffn, self.ffn_norm = ffn, norm()
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, self_mask: AttentionMask, memory: torch.Tensor, cross_mask: AttentionMask,
        cache: DecoderCache | None, i: int, token_mask: torch.Tensor | None = None,
        moe_records: list[MoEOutput] | None = None,
    ) -> torch.Tensor:
        self_cache = cache.self_attn[i] if cache is not None else None
        cross_cache = cache.cross_attn[i] if cache is not None else None
        x = self.residual(x, self.self_norm, lambda h: self.self_attn(h, mask=self_mask, cache=self_cache))
        x = self.residual(x, self.cross_norm, lambda h: self.cross_attn(h, memory, mask=cross_mask, cache=cross_cache))
        return self.residual(x, self.ffn_norm, lambda h: apply_ffn(self.ffn, h, token_mask, moe_records))


class AttentionEncoderDecoder(Seq2SeqGenerateMixin, nn.Module):
    """``encode``/``decode``/``new_cache`` (the generation protocol of ``framework.generation.seq2seq``)
    over ``self.encoder`` / ``self.decoder`` (``nn.ModuleList`` of the blocks above). A subclass sets
    those and ``self.config``, and defines ``embed_source``, ``embed_target``, ``encoder_output`` and
    ``decoder_output``; ``encoder_bias`` / ``decoder_bias`` add a position bias to the attention scores, and
    ``own_stats`` the statistics only it reports."""

    encoder: nn.ModuleList
    decoder: nn.ModuleList

    # ---- what each architecture defines ------------------------------------------------------
    def embed_source(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, S) ids -> (B, S, C) encoder input."""
        raise NotImplementedError

    def embed_target(self, decoder_input_ids: torch.Tensor, offset: int) -> torch.Tensor:
        """(B, T) ids at positions offset.. -> (B, T, C) decoder input."""
        raise NotImplementedError

    def encoder_output(self, x: torch.Tensor) -> torch.Tensor:
        """The last encoder block's output (B, S, C) -> memory (B, S, C)."""
        raise NotImplementedError

    def decoder_output(self, x: torch.Tensor) -> torch.Tensor:
        """The last decoder block's output (B, T, C) -> logits (B, T, V)."""
        raise NotImplementedError

    def encoder_bias(self, s: int) -> torch.Tensor | None:
        """Additive bias (1|B, H, S, S) on the encoder's attention scores, or None."""
        return None

    def decoder_bias(self, t: int, s: int, offset: int) -> torch.Tensor | None:
        """Additive bias (1|B, H, T, S) on the decoder self-attention scores of T queries at positions
        offset.. against S = offset + T keys, or None."""
        return None

    def own_stats(self) -> dict[str, torch.Tensor]:
        """Statistics of this architecture's own (logged under ``<plugin>/``), besides the shared ones."""
        return {}

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
    ) -> ModelOutput:
        """input_ids/attention_mask: (B, S) source; decoder_input_ids/decoder_attention_mask: (B, T)
        (start token + target[:-1]). Returns logits (B, T, V) aligned with the target."""
        require_decoder_inputs(type(self).__name__, decoder_input_ids)
        moe_records: list[MoEOutput] = []  # ffn=moe: encoder then decoder layers
        enc_rms: list[torch.Tensor] = []
        dec_rms: list[torch.Tensor] = []
        memory = self.encode(input_ids, attention_mask, moe_records, enc_rms)
        logits = self.decode(decoder_input_ids, memory, attention_mask, None, decoder_attention_mask, moe_records,
                             dec_rms)
        stats = self.own_stats() | self.shared_stats(enc_rms, dec_rms) | collect_moe_stats(moe_records)
        aux = sum((m.aux_loss for m in moe_records), logits.new_zeros((), dtype=torch.float32))
        return ModelOutput(logits=logits, aux_loss=aux, stats=stats)

    # ---- the two halves ------------------------------------------------------------------------
    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        moe_records: list[MoEOutput] | None = None, rms_records: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, S) source ids -> (B, S, C) encoder output (ffn=moe: routing records go to moe_records; the
        residual stream's RMS after each block to rms_records)."""
        x = self.embed_source(input_ids)
        s = input_ids.shape[1]
        # Padding (and position bias) built once, shared by every layer.
        mask = build_mask(s, s, key_mask=attention_mask, position_bias=self.encoder_bias(s),
                          dtype=x.dtype, device=x.device)
        for block in self.encoder:
            x = block(x, mask, attention_mask, moe_records)
            if rms_records is not None:
                rms_records.append(residual_rms(x))
        return self.encoder_output(x)

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        cache: DecoderCache | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        moe_records: list[MoEOutput] | None = None,
        rms_records: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(B, T) decoder inputs against (B, S, C) memory -> (B, T, V) logits. With a cache the inputs
        continue the cached positions. Records as for ``encode``."""
        t = decoder_input_ids.shape[1]
        offset = cache.length if cache is not None else 0
        x = self.embed_target(decoder_input_ids, offset)
        # Built once per call, shared by every layer: causal (+ bias) (1|B, H, T, offset + T), and cross.
        self_mask = build_mask(t, offset + t, causal=True, key_mask=decoder_attention_mask,
                               position_bias=self.decoder_bias(t, offset + t, offset), dtype=x.dtype,
                               device=x.device)
        cross_mask = build_mask(t, memory.shape[1], key_mask=memory_mask, dtype=x.dtype, device=x.device)
        for i, block in enumerate(self.decoder):
            x = block(x, self_mask, memory, cross_mask, cache, i, decoder_attention_mask, moe_records)
            if rms_records is not None:
                rms_records.append(residual_rms(x))
        return self.decoder_output(x)

    def new_cache(self) -> DecoderCache:
        return DecoderCache(len(self.decoder))

    def attention_stats(self) -> dict[str, torch.Tensor]:
        """Shared statistics (logged by the core) of the three attentions, when recorded (validation batches):
        ``attn/entropy/<part>`` (normalised, 1 = uniform) and ``attn/topk_mass/<part>``, one value per block,
        for part = ``encoder`` (self-attention), ``decoder`` (causal self-attention), ``cross``."""
        stats: dict[str, torch.Tensor] = {}
        for part, modules in (("encoder", [b.attn for b in self.encoder]),
                              ("decoder", [b.self_attn for b in self.decoder]),
                              ("cross", [b.cross_attn for b in self.decoder])):
            recorded = collect_attention_stats(modules)
            if recorded:
                stats[f"attn/entropy/{part}"] = recorded["attn_entropy_norm"]
                stats[f"attn/topk_mass/{part}"] = recorded["attn_topk_mass"]
        return stats

    def shared_stats(self, encoder_rms: list[torch.Tensor], decoder_rms: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The shared statistics of one forward: ``resid/rms/encoder`` and ``resid/rms/decoder`` (the residual
        RMS after each block, from ``encode``/``decode``'s ``rms_records``) and ``attention_stats()``."""
        stats = {"resid/rms/encoder": torch.stack(encoder_rms), "resid/rms/decoder": torch.stack(decoder_rms)}
        return stats | self.attention_stats()


def require_decoder_inputs(name: str, decoder_input_ids: torch.Tensor | None) -> torch.Tensor:
    """The teacher-forced decoder inputs of a seq2seq batch, or a ValueError naming the model."""
    if decoder_input_ids is None:
        raise ValueError(
            f"{name}: decoder_input_ids is required (seq2seq batches carry it; see framework/data/seq2seq.py)"
        )
    return decoder_input_ids
