"""Per-layer key/value cache for incremental decoding."""
from __future__ import annotations

import torch

MIN_CAPACITY = 64  # positions allocated at least, when nothing was reserved


class KVCache:
    """Keys and values of the latest positions, (B, H_kv, S, D) each.

    Decoding without gradients (``generate`` runs under ``torch.inference_mode``) writes each step into a
    preallocated buffer: ``reserve(n)`` sizes it for n positions up front (the prompt plus the new tokens), and a
    full buffer doubles, so a token costs no copy of the cache (a ``torch.cat`` per token copies the whole
    cache: quadratic in the generated length). With gradients (a training forward with a state) the cache grows
    by concatenation, so autograd never sees an in-place write.

    ``keep`` bounds what is stored to the last ``keep`` positions (a causal window's look-back), so a
    sliding-window layer decodes with a cache whose size does not grow with the generated length. ``length``
    always counts every position seen (RoPE offsets and key positions are absolute).
    """

    def __init__(self, keep: int | None = None) -> None:
        self._k: torch.Tensor | None = None  # (B, H, capacity, D) buffers; the first ``_n`` positions hold data
        self._v: torch.Tensor | None = None
        self._n = 0
        self.keep = keep
        self.dropped = 0  # positions no longer stored (always 0 without ``keep``)
        self.reserved = 0  # positions to allocate on the first write

    # k and v are the stored positions (views of the buffers); assigning them replaces the buffers
    # (beam search's reordering, cross-attention's projected memory).
    @property
    def k(self) -> torch.Tensor | None:
        return None if self._k is None else self._k[..., : self._n, :]

    @k.setter
    def k(self, value: torch.Tensor | None) -> None:
        self._k, self._n = value, 0 if value is None else value.shape[-2]

    @property
    def v(self) -> torch.Tensor | None:
        return None if self._v is None else self._v[..., : self._n, :]

    @v.setter
    def v(self, value: torch.Tensor | None) -> None:
        self._v = value

    @property
    def length(self) -> int:
        return self.dropped + self._n

    @property
    def capacity(self) -> int:
        return 0 if self._k is None else self._k.shape[-2]

    def reserve(self, positions: int) -> None:
        """Allocate room for ``positions`` in total on the next write (bounded by ``keep`` if set)."""
        self.reserved = positions if self.keep is None else min(positions, self.keep)

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's (B, H_kv, T, D) keys/values; return the stored ones before this step plus these
        (the last S positions of ``length``)."""
        if self.keep is None and not (torch.is_grad_enabled() and (k.requires_grad or v.requires_grad)):
            return self._write(k, v)
        if self._k is not None:
            k, v = torch.cat([self.k, k], dim=-2), torch.cat([self.v, v], dim=-2)
        self._k, self._v, self._n = k, v, k.shape[-2]
        extra = k.shape[-2] - self.keep if self.keep is not None else 0
        if extra > 0:  # slices: layers replace (never modify) stored tensors, so shallow copies stay valid
            self._k, self._v = k[..., extra:, :], v[..., extra:, :]
            if extra > 1:  # a prompt longer than the window: copy it out, or the view keeps all T positions alive
                self._k, self._v = self._k.clone(), self._v.clone()
            self._n = self._k.shape[-2]
            self.dropped += extra
        return k, v

    def _write(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """In place into the buffers: earlier views stay valid (positions are only appended; a full buffer is
        replaced by a larger copy, never written over)."""
        n, t = self._n, k.shape[-2]
        if self._k is None or n + t > self.capacity or self._k.shape[:2] != k.shape[:2] or self._k.dtype != k.dtype:
            if self.reserved >= n + t and self.capacity < self.reserved:  # the size asked for, exactly
                capacity = self.reserved
            else:  # unreserved or outgrown: double (amortised O(1) copies per position)
                capacity = max(n + t, 2 * self.capacity, MIN_CAPACITY)
            for name, new in (("_k", k), ("_v", v)):
                buffer = new.new_empty(*new.shape[:2], capacity, new.shape[-1])
                if n:
                    buffer[..., :n, :] = getattr(self, name)[..., :n, :]
                setattr(self, name, buffer)
        self._k[..., n : n + t, :] = k
        self._v[..., n : n + t, :] = v
        self._n = n + t
        return self.k, self.v

    def reset(self) -> None:
        self._k = self._v = None
        self._n = 0
        self.dropped = 0
