"""Generation shared by the plugins: next-token sampling (``sampling``), decoder-only sampling with a
decode state (``causal``: KV caches, recurrent states), encoder-decoder greedy / sampled decoding and beam search (``seq2seq``), and the
text codec of ``archlab generate`` for encoder-decoders (``text``)."""
from __future__ import annotations

from .causal import generate_causal
from .sampling import sample_next_token
from .seq2seq import EncoderDecoder, Seq2SeqCache, Seq2SeqGenerateMixin, beam_search, generate_seq2seq
from .text import ByteSentinelCodec, PromptCodec

__all__ = [
    "ByteSentinelCodec",
    "EncoderDecoder",
    "PromptCodec",
    "Seq2SeqCache",
    "Seq2SeqGenerateMixin",
    "beam_search",
    "generate_seq2seq",
    "generate_causal",
    "sample_next_token",
]
