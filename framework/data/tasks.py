"""Generated tasks with exact answers, as (input_ids, labels) tensors of shape (N, T).

Labels follow the causal-LM contract: labels[:, t] is the target for position t, -100 = ignored.
Every generator draws only from the ``torch.Generator`` it is given, so a seed fixes the data.
"""
from __future__ import annotations

import torch

PAD, SEP = 0, 1  # copy / reverse / sort: symbols are 2..vocab_size-1
IGNORE = -100
MQAR_POWER_A = 0.01  # Zoology's power-law exponent for query gaps


def answer_task(
    task: str, n: int, seq_len: int, vocab_size: int, length: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """copy / reverse / sort: ``x_1..x_L SEP y_1..y_L PAD...``, loss only on the answer ``y``.

    The stream has seq_len + 1 tokens; input = stream[:-1], labels = stream[1:] masked to the answer,
    so 2 * length <= seq_len.
    """
    x = torch.randint(2, vocab_size, (n, length), generator=generator)  # (N, L)
    if task == "copy":
        y = x
    elif task == "reverse":
        y = x.flip(1)
    elif task == "sort":
        y = x.sort(dim=1).values
    else:
        raise ValueError(f"unknown answer task {task!r}")
    stream = torch.full((n, seq_len + 1), PAD, dtype=torch.long)  # (N, T + 1)
    stream[:, :length] = x
    stream[:, length] = SEP
    stream[:, length + 1 : 2 * length + 1] = y
    labels = torch.full((n, seq_len), IGNORE, dtype=torch.long)  # (N, T)
    # Position t predicts stream[t + 1]: the answer sits at stream[L+1 .. 2L], so positions L .. 2L-1.
    labels[:, length : 2 * length] = y
    return stream[:, :-1].clone(), labels


def _distinct(n: int, k: int, low: int, high: int, generator: torch.Generator) -> torch.Tensor:
    """(n, k) tokens from [low, high), distinct within each row."""
    size = high - low
    if k * k > 4 * size:
        # Dense draw: a random permutation per row (cheap here, since the range is small).
        return torch.rand(n, size, generator=generator).argsort(dim=1)[:, :k] + low
    # Sparse draw: sample with replacement and redraw the rows that repeat a token; with k^2 <= 4*size
    # most rows are distinct at once, and this avoids an (n, size) tensor for large vocabularies.
    out = torch.randint(low, high, (n, k), generator=generator)
    bad = torch.arange(n)
    while True:
        s = out[bad].sort(dim=1).values
        bad = bad[(s[:, 1:] == s[:, :-1]).any(dim=1)]
        if len(bad) == 0:
            return out
        out[bad] = torch.randint(low, high, (len(bad), k), generator=generator)


def mqar(
    n: int, seq_len: int, vocab_size: int, num_kv: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-query associative recall (Zoology).

    The sequence opens with ``num_kv`` pairs ``k v`` (keys from [1, V/2), values from [V/2, V),
    distinct within an example). Each key is then queried once, at position 2*num_kv + 2*gap where the
    gaps follow a power law p(g) ~ (g + 1)^(a - 1), so most queries come soon after the context.
    The label at a query position is that key's value; every other position is ignored. Other
    positions hold 0.
    """
    half = vocab_size // 2
    keys = _distinct(n, num_kv, 1, half, generator)  # (N, kv)
    values = _distinct(n, num_kv, half, vocab_size, generator)  # (N, kv)
    context = 2 * num_kv
    space = (seq_len - context) // 2  # query slots, every other position after the context
    weights = MQAR_POWER_A * torch.arange(1, space + 1, dtype=torch.float64) ** (MQAR_POWER_A - 1)
    gaps = torch.multinomial(weights.expand(n, space).float(), num_kv, replacement=False, generator=generator)
    query_pos = context + 2 * gaps  # (N, kv)

    input_ids = torch.zeros((n, seq_len), dtype=torch.long)  # (N, T)
    input_ids[:, 0:context:2] = keys
    input_ids[:, 1:context:2] = values
    input_ids.scatter_(1, query_pos, keys)
    labels = torch.full((n, seq_len), IGNORE, dtype=torch.long)
    labels.scatter_(1, query_pos, values)
    return input_ids, labels
