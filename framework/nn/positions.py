"""Position encodings: sinusoidal table, rotary (RoPE), ALiBi."""
from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_table(n_positions: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """(n_positions, dim) table of Vaswani et al. 2017: sin on even channels, cos on odd."""
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(base) / dim))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq[: dim // 2])
    return table


class RotaryEmbedding(nn.Module):
    """RoPE (Su et al.) in the half-split layout used by Llama / Hugging Face (rotate_half)."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rope needs an even head dimension, got {head_dim}")
        self.head_dim, self.theta = head_dim, theta
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._build(max_seq_len)

    def _build(self, n: int) -> None:
        freqs = torch.outer(torch.arange(n, dtype=torch.float32, device=self.inv_freq.device), self.inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)  # (n, D)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        # rotate_half(x) * sin = swap_halves(x) * [-sin, sin]: the sign lives in the table, not in a neg op.
        self.register_buffer("sin_signed", torch.cat([-freqs.sin(), freqs.sin()], dim=-1), persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate (B, H, T, D) queries and keys that sit at positions offset .. offset+T-1."""
        t = q.shape[-2]
        if offset + t > self.cos.shape[0]:
            self._build(2 * (offset + t))
        cos = self.cos[offset : offset + t].to(q.dtype)
        sin = self.sin_signed[offset : offset + t].to(q.dtype)
        return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin, as x * cos + swap_halves(x) * sin_signed in one addcmul."""
    half = x.shape[-1] // 2
    swapped = torch.cat([x[..., half:], x[..., :half]], dim=-1)
    return torch.addcmul(x * cos, swapped, sin_signed)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Per-head slopes of ALiBi (Press et al. 2022), incl. their recipe for non-powers of two."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return torch.tensor(power_of_two(n_heads))
    closest = 2 ** math.floor(math.log2(n_heads))
    extra = power_of_two(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(power_of_two(closest) + extra)


def alibi_bias(slopes: torch.Tensor, q_len: int, k_len: int, device: torch.device | None = None) -> torch.Tensor:
    """(H, q_len, k_len) additive bias -slope * distance; queries are the last q_len of k_len positions."""
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    distance = (q_pos - k_pos).abs().float()  # symmetric; causal models mask the future anyway
    return -slopes.to(device)[:, None, None] * distance
