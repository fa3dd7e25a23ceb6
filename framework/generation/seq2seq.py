"""Encoder-decoder generation: greedy / sampled decoding and beam search, shared by every seq2seq plugin.

A model takes part by offering
  ``encode(input_ids, attention_mask) -> memory`` (B, S, C),
  ``decode(decoder_input_ids, memory, memory_mask, cache=None) -> logits`` (B, T, V) and
  ``new_cache() -> Seq2SeqCache`` (``framework.nn.cross_attention.DecoderCache`` for attention decoders).
The encoder runs once; with ``use_cache`` each step feeds one token against the decoder's cache (KV cache
and the cross-attention keys/values projected on the first step, or a recurrent state). Without it each
step re-runs the decoder on the whole prefix (the reference the cached path is tested against).
``Seq2SeqGenerateMixin`` gives such a model its ``generate`` method.

Outputs are (B, T) generated tokens without the start token; after a row's ``eos_token_id`` the rest
is ``pad_token_id``.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch

from .sampling import sample_next_token


class Seq2SeqCache(Protocol):
    """What decoding needs of a decoder cache."""

    @property
    def length(self) -> int: ...  # decoder positions already consumed

    def reorder(self, index: torch.Tensor) -> None: ...  # keep batch rows ``index`` (surviving beams)


class EncoderDecoder(Protocol):
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor: ...

    def decode(
        self, decoder_input_ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None,
        cache: Seq2SeqCache | None = None,
    ) -> torch.Tensor: ...

    def new_cache(self) -> Seq2SeqCache: ...


def _step_logits(
    model: EncoderDecoder, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None,
    cache: Seq2SeqCache | None,
) -> torch.Tensor:
    """(B, V) logits for the next token after ``tokens`` (B, t)."""
    step_input = tokens[:, -1:] if cache is not None and cache.length > 0 else tokens
    return model.decode(step_input, memory, memory_mask, cache)[:, -1, :]


@torch.no_grad()
def generate_seq2seq(
    model: EncoderDecoder,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    decoder_start_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    attention_mask: torch.Tensor | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Greedy (``temperature=0``) or sampled decoding, or beam search when ``num_beams > 1``."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: must be >= 1, got {max_new_tokens}")
    if num_beams < 1:
        raise ValueError(f"num_beams: must be >= 1, got {num_beams}")
    if num_beams > 1:
        return beam_search(
            model, input_ids, max_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
            decoder_start_token_id=decoder_start_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
            attention_mask=attention_mask, use_cache=use_cache,
        )
    b = input_ids.shape[0]
    memory = model.encode(input_ids, attention_mask)  # (B, S, C), once
    cache = model.new_cache() if use_cache else None
    tokens = torch.full((b, 1), decoder_start_token_id, dtype=torch.long, device=input_ids.device)
    done = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        logits = _step_logits(model, tokens, memory, attention_mask, cache)
        nxt = sample_next_token(logits, temperature, top_k, top_p, generator).squeeze(-1)  # (B,)
        nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done |= nxt == eos_token_id
        if done.all():
            break
    return tokens[:, 1:]


@torch.no_grad()
def beam_search(
    model: EncoderDecoder,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    num_beams: int,
    decoder_start_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    length_penalty: float = 1.0,
    attention_mask: torch.Tensor | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Beam search over summed log-probabilities; finished beams stay in the beam, extended by padding
    at no cost. The returned hypothesis per example maximises ``score / length ** length_penalty``
    (length counts tokens up to and including EOS), so length_penalty > 1 favours longer outputs.
    With ``num_beams=1`` this is exactly greedy decoding."""
    b, k = input_ids.shape[0], num_beams
    device = input_ids.device
    memory = model.encode(input_ids, attention_mask)  # (B, S, C)
    memory = memory.repeat_interleave(k, dim=0)  # (B*K, S, C): beam j of example i is row i*K + j
    mask = attention_mask.repeat_interleave(k, dim=0) if attention_mask is not None else None
    cache = model.new_cache() if use_cache else None
    tokens = torch.full((b * k, 1), decoder_start_token_id, dtype=torch.long, device=device)
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: only the first may expand at step one
    done = torch.zeros(b * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(b * k, dtype=torch.long, device=device)
    for _ in range(max_new_tokens):
        logp = _step_logits(model, tokens, memory, mask, cache).float().log_softmax(-1)  # (B*K, V)
        v = logp.shape[-1]
        # A finished beam may only emit padding, and it costs nothing.
        pad_only = torch.full_like(logp, float("-inf"))
        pad_only[:, pad_token_id] = 0.0
        logp = torch.where(done[:, None], pad_only, logp)
        candidates = (scores.view(b * k, 1) + logp).view(b, k * v)  # (B, K*V)
        scores, flat = candidates.topk(k, dim=-1)  # (B, K)
        beam = flat // v  # which parent beam, (B, K)
        token = flat % v
        rows = (beam + torch.arange(b, device=device)[:, None] * k).flatten()  # (B*K,) parent rows
        tokens = torch.cat([tokens[rows], token.flatten()[:, None]], dim=1)
        done = done[rows]
        lengths = lengths[rows] + (~done).long()
        done = done | (token.flatten() == eos_token_id)
        if cache is not None:
            cache.reorder(rows)
        if done.all():
            break
    normalised = scores / lengths.view(b, k).clamp(min=1).float() ** length_penalty
    best = normalised.argmax(-1) + torch.arange(b, device=device) * k  # (B,)
    return tokens[best, 1:]


class Seq2SeqGenerateMixin:
    """``generate`` for an encoder-decoder ``nn.Module`` with ``encode``/``decode``/``new_cache`` and a
    ``config`` carrying ``decoder_start_token_id``, ``eos_token_id`` and ``pad_token_id``. Put it before
    ``nn.Module`` in the bases. ``is_encoder_decoder`` tells ``archlab generate`` and the
    generated-exact-match callback to decode a target from a source."""

    is_encoder_decoder = True
    config: Any

    def max_decoder_positions(self) -> int | None:
        """The most decoder input tokens the model takes (a position table's length); None: no bound."""
        return None

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
        beam search with num_beams > 1. Returns (B, T) tokens after the start token (padding after EOS)."""
        was_training = self.training
        self.eval()
        cfg = self.config
        limit = self.max_decoder_positions()
        if limit is not None:
            max_new_tokens = min(max_new_tokens, limit)
        out = generate_seq2seq(
            self, input_ids, max_new_tokens, decoder_start_token_id=cfg.decoder_start_token_id,
            eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, attention_mask=attention_mask,
            temperature=temperature, top_k=top_k, top_p=top_p, num_beams=num_beams, length_penalty=length_penalty,
            use_cache=use_cache, generator=generator,
        )
        self.train(was_training)
        return out
