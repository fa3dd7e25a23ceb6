"""Per-layer key/value cache for incremental decoding."""
from __future__ import annotations

import torch


class KVCache:
    """Keys and values of the latest positions, (B, H_kv, S, D) each; grows by concatenation.

    ``keep`` bounds what is stored to the last ``keep`` positions (a causal window's look-back), so a
    sliding-window layer decodes with a cache whose size does not grow with the generated length. ``length``
    always counts every position seen (RoPE offsets and key positions are absolute).
    """

    def __init__(self, keep: int | None = None) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.keep = keep
        self.dropped = 0  # positions no longer stored (always 0 without ``keep``)

    @property
    def length(self) -> int:
        return self.dropped + (0 if self.k is None else self.k.shape[-2])

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's (B, H_kv, T, D) keys/values; return the stored ones before this step plus these
        (the last S positions of ``length``)."""
        if self.k is not None:
            k, v = torch.cat([self.k, k], dim=-2), torch.cat([self.v, v], dim=-2)
        self.k, self.v = k, v
        extra = k.shape[-2] - self.keep if self.keep is not None else 0
        if extra > 0:  # slices: layers replace (never modify) stored tensors, so shallow copies stay valid
            self.k, self.v = k[..., extra:, :], v[..., extra:, :]
            self.dropped += extra
        return k, v

    def reset(self) -> None:
        self.k = self.v = None
        self.dropped = 0
