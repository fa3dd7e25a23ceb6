"""BigBird: sliding window + global tokens + random key blocks per query block (seeded, fixed per layer)."""
from __future__ import annotations

import torch

from .base import SparsePattern, arange_clip, union
from .window import window_allowed, window_candidates


def random_blocks(
    n_blocks: int, n_random: int, window_blocks: int, causal: bool, seed: int
) -> torch.Tensor:
    """(NB, NB) bool: for each query block, ``n_random`` key blocks outside its window (earlier ones when causal)."""
    g = torch.Generator().manual_seed(seed)
    score = torch.rand(n_blocks, n_blocks, generator=g)
    qb = torch.arange(n_blocks)[:, None]
    kb = torch.arange(n_blocks)[None, :]
    eligible = (qb - kb).abs() > window_blocks
    if causal:
        eligible = eligible & (kb < qb)
    score = score.masked_fill(~eligible, -1.0)
    table = torch.zeros(n_blocks, n_blocks, dtype=torch.bool)
    if n_random > 0:
        top = score.topk(min(n_random, n_blocks), dim=1)
        table.scatter_(1, top.indices, top.values >= 0)
    return table


class BigBird(SparsePattern):
    name = "bigbird"

    def __init__(
        self,
        window: int,
        n_global: int,
        n_random: int,
        max_seq_len: int,
        causal: bool = True,
        block_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__(causal, block_size)
        if window < 1 or n_global < 0 or n_random < 0:
            raise ValueError(f"need window >= 1, n_global >= 0, n_random >= 0; got {window}, {n_global}, {n_random}")
        self.window, self.max_seq_len = window, max_seq_len
        self.n_global = n_global
        n_blocks = -(-max_seq_len // block_size)
        self.random = random_blocks(n_blocks, n_random, -(-window // block_size), causal, seed)  # (NB, NB)
        self._random_on: dict[torch.device, torch.Tensor] = {}

    def allowed_pattern(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        bs = self.block_size
        last = self.random.shape[0] - 1
        qb, kb = (q // bs).clamp(max=last), (k // bs).clamp(max=last)
        return window_allowed(q, k, self.window, 1, self.causal) | self._random_table(q.device)[qb, kb]

    def _random_table(self, device: torch.device) -> torch.Tensor:
        """The random-block table on the positions' device (GPU decoding and FlexAttention's masks), copied once."""
        if device not in self._random_on:
            self._random_on[device] = self.random.to(device)
        return self._random_on[device]

    def candidate_keys(self, block: int, t: int) -> torch.Tensor:
        if t > self.max_seq_len:
            raise ValueError(f"bigbird: sequence of {t} tokens exceeds max_seq_len={self.max_seq_len}")
        bs = self.block_size
        local = window_candidates(block, bs, t, self.window, 1, self.causal)
        e = min((block + 1) * bs, t)
        g = self.global_pos[self.global_pos < (e if self.causal else t)]
        rand = [arange_clip(b * bs, (b + 1) * bs, t) for b in self.random[block].nonzero().flatten().tolist()]
        return union(local, g, *rand)
