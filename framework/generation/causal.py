"""Autoregressive sampling for causal LMs that decode against a state (per-layer KV caches, recurrent states)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .sampling import sample_next_token


def generate_causal(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    new_state: Callable[[], Any] | None,
    context_limit: int | None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Append ``max_new_tokens`` sampled tokens to (B, T) ``input_ids``; ``temperature=0`` is greedy.

    ``model(ids, attention_mask=..., state=state)`` must return an object with ``logits`` and advance
    ``state.length``. The prompt is one forward (prefill); with ``new_state`` each further step feeds one token
    against the state, whose caches are sized once for the whole output (``state.reserve``); without it (None)
    each step recomputes the whole context. With a ``context_limit`` the last that many tokens are kept in both
    modes (the state is rebuilt when it would overflow), so both modes give the same tokens.

    ``attention_mask`` (B, T), 1 = token, 0 = padding, lets rows of different lengths share a batch: pad on the
    left, so every row's next token is at the end; generated tokens are unmasked. Runs under
    ``torch.inference_mode`` and writes tokens into one preallocated (B, T + max_new_tokens) tensor.
    """
    was_training = model.training
    model.eval()
    b, prompt = input_ids.shape
    total = prompt + max_new_tokens
    tokens = input_ids.new_empty(b, total)
    tokens[:, :prompt] = input_ids
    mask = None
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask: shape {tuple(attention_mask.shape)} is not input_ids' "
                             f"{tuple(input_ids.shape)}")
        mask = attention_mask.new_ones(b, total)
        mask[:, :prompt] = attention_mask
    state, start, n = None, 0, prompt  # the state holds positions [start, n)
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            if new_state is not None and state is not None and (context_limit is None or state.length < context_limit):
                step = tokens[:, n - 1 : n]
            else:  # (re)fill: first step, no state, or the context is full
                start = 0 if context_limit is None else max(0, n - context_limit)
                state = new_state() if new_state is not None else None
                if state is not None and hasattr(state, "reserve"):
                    state.reserve(total - start if context_limit is None else min(total - start, context_limit))
                step = tokens[:, start:n]
            step_mask = None if mask is None else mask[:, start:n]
            logits = model(step, attention_mask=step_mask, state=state).logits[:, -1, :]
            tokens[:, n : n + 1] = sample_next_token(logits, temperature, top_k, top_p, generator)
            n += 1
    model.train(was_training)
    return tokens
