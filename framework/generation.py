"""Autoregressive sampling for decoder-only models with a per-layer KV cache, shared by plugins."""
from __future__ import annotations

import torch
from torch import nn

from .nn.kv_cache import KVCache
from .sampling import sample_next_token


@torch.no_grad()
def generate_with_kv_cache(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    n_layers: int,
    max_seq_len: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Append ``max_new_tokens`` sampled tokens to (B, T) ``input_ids``; ``temperature=0`` is greedy.

    ``model(ids, cache=[KVCache] * n_layers)`` must return an object with ``logits``. With ``use_cache``
    each step feeds one token against the cache; without it each step recomputes the whole context.
    Contexts longer than ``max_seq_len`` keep their last ``max_seq_len`` tokens in both modes (the
    cache is rebuilt when it would overflow), so both modes give the same tokens.
    """
    was_training = model.training
    model.eval()
    tokens = input_ids
    cache: list[KVCache] | None = None
    for _ in range(max_new_tokens):
        if use_cache and cache is not None and cache[0].length < max_seq_len:
            step_input = tokens[:, -1:]
        else:  # (re)fill: first step, no cache, or cache full
            cache = [KVCache() for _ in range(n_layers)] if use_cache else None
            step_input = tokens[:, -max_seq_len:]
        logits = model(step_input, cache=cache).logits[:, -1, :]
        tokens = torch.cat([tokens, sample_next_token(logits, temperature, top_k, top_p, generator)], dim=1)
    model.train(was_training)
    return tokens
