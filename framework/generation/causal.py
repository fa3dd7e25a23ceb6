"""Autoregressive sampling for causal LMs that decode against a state (per-layer KV caches, recurrent states)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .sampling import sample_next_token


@torch.no_grad()
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
) -> torch.Tensor:
    """Append ``max_new_tokens`` sampled tokens to (B, T) ``input_ids``; ``temperature=0`` is greedy.

    ``model(ids, state=state)`` must return an object with ``logits`` and advance ``state.length``. With
    ``new_state`` each step feeds one token against the state; without it (None) each step recomputes the
    whole context. With a ``context_limit`` the last that many tokens are kept in both modes (the state is
    rebuilt when it would overflow), so both modes give the same tokens.
    """
    was_training = model.training
    model.eval()
    tokens, state = input_ids, None
    for _ in range(max_new_tokens):
        if new_state is not None and state is not None and (context_limit is None or state.length < context_limit):
            step = tokens[:, -1:]
        else:  # (re)fill: first step, no state, or the context is full
            state = new_state() if new_state is not None else None
            step = tokens if context_limit is None else tokens[:, -context_limit:]
        logits = model(step, state=state).logits[:, -1, :]
        tokens = torch.cat([tokens, sample_next_token(logits, temperature, top_k, top_p, generator)], dim=1)
    model.train(was_training)
    return tokens
