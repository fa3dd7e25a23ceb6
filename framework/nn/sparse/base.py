"""What a static sparse pattern declares, and the block layout the kernel runs on.

A pattern answers two questions:
  * ``allowed(q_pos, k_pos)``: may query position i attend to key position j? (elementwise, broadcasting
    position tensors; causality and "a query always sees itself" are part of it). The dense
    ``mask(t)`` built from it is the test reference, never the implementation.
  * ``candidate_keys(block, t)``: a superset of the keys any query of a query block may attend to,
    so the kernel gathers O(w) keys per query instead of all t.
Rows of ``global_queries(t)`` attend to every key; the kernel computes them apart, densely (O(g*t)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Layout:
    """Gather plan for one sequence length.

    index: (NQB, K) key positions gathered for each query block (0 where ``valid`` is False);
    mask:  (NQB, BS, K) bool, True where query (block, row) may attend to the gathered key;
           rows past t and rows of global queries are all False;
    global_rows: (G,) positions computed densely; pairs: number of (query, key) pairs attended.
    """

    index: torch.Tensor
    mask: torch.Tensor
    global_rows: torch.Tensor
    pairs: int
    block_size: int
    t: int
    offset: int | None = None  # set when block b's keys are the range b*BS + offset + [0, K): gathered as a view
    qperm: torch.Tensor | None = None  # (NQB*BS,) query position of each block row (t = padding); None: in order

    def shared_mask(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(template, interior): for window layouts (``offset`` set) every block away from the sequence ends
        has the same (BS, K) mask, the template; interior (NQB,) says which blocks have exactly it. Kernels
        then use one broadcast mask for chunks of interior blocks instead of a (NQB, BS, K) table.
        Other layouts: (None, all False). Built once."""
        if not hasattr(self, "_shared"):
            nqb = self.mask.shape[0]
            if self.offset is None:
                self._shared = (None, torch.zeros(nqb, dtype=torch.bool, device=self.mask.device))
            else:
                template = self.mask[nqb // 2]
                self._shared = (template, (self.mask == template).flatten(1).all(1))
        return self._shared

    @property
    def bias(self) -> torch.Tensor:
        """(NQB, BS, K) additive form of ``mask`` (0 allowed, -inf not), built once."""
        if not hasattr(self, "_bias"):
            self._bias = torch.zeros(self.mask.shape, device=self.mask.device).masked_fill(~self.mask, float("-inf"))
        return self._bias


class SparsePattern:
    """Base class of the static patterns; subclasses set ``causal``/``block_size`` and override the hooks."""

    name = "pattern"

    def __init__(self, causal: bool, block_size: int) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.causal, self.block_size = causal, block_size
        self._layouts: dict[tuple[int, str], Layout] = {}

    # ---- hooks --------------------------------------------------------------------------------
    def allowed_pattern(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The pattern's own rule, without causality or the diagonal (broadcasting int tensors)."""
        raise NotImplementedError

    def candidate_keys(self, block: int, t: int) -> torch.Tensor:
        """Sorted, unique key positions (< t) covering every allowed key of query block ``block``."""
        raise NotImplementedError

    #: the first n_global positions are global: they attend to every key and every query attends to them
    n_global: int = 0

    @property
    def global_pos(self) -> torch.Tensor:
        return torch.arange(self.n_global)

    def lookback(self) -> int | None:
        """The farthest a query looks back (q - k) when that is bounded (a causal window), else None. Decoding
        then keeps only that many past keys (Mistral's rolling buffer)."""
        return None

    def regular_offset(self) -> int | None:
        """o when every block's candidates lie in b*BS + o + [0, K) for one o (window-like patterns):
        the kernel then slices keys instead of gathering them."""
        return None

    def query_order(self, t: int) -> torch.Tensor | None:
        """Positions in the order queries are grouped into blocks; None keeps position order. Patterns
        whose keys depend on i mod l (strided) group queries of one residue, so a block needs few keys."""
        return None

    def candidate_keys_for(self, queries: torch.Tensor, t: int) -> torch.Tensor:
        """Candidates for an arbitrary query set (used with ``query_order``)."""
        raise NotImplementedError

    def global_queries(self, t: int) -> torch.Tensor:
        return self.global_pos[self.global_pos < t]

    # ---- derived ------------------------------------------------------------------------------
    def allowed(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        ok = self.allowed_pattern(q, k) | (q == k)
        if self.n_global:  # comparisons, not isin: FlexAttention evaluates this rule under vmap
            ok = ok | (q < self.n_global) | (k < self.n_global)
        if self.causal:
            ok = ok & (k <= q)
        return ok

    def mask(self, t: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(T, T) bool reference mask: the test reference, O(t^2)."""
        pos = torch.arange(t, device=device)
        return self.allowed(pos[:, None], pos[None, :])

    def layout(self, t: int, device: torch.device | str = "cpu") -> Layout:
        key = (t, str(device))
        if key not in self._layouts:
            self._layouts[key] = self._build_layout(t, torch.device(device))
        return self._layouts[key]

    def _build_layout(self, t: int, device: torch.device) -> Layout:
        bs = self.block_size
        nqb = -(-t // bs)
        order = self.query_order(t)
        if order is not None:
            cands = [self.candidate_keys_for(order[b * bs : (b + 1) * bs], t) for b in range(nqb)]
        else:
            cands = [self.candidate_keys(b, t) for b in range(nqb)]
        width = -(-max(len(c) for c in cands) // 32) * 32  # round up: odd widths make bmm slow
        offset = self.regular_offset()
        if offset is not None:
            span = max(int(c.max()) - b * bs - offset + 1 for b, c in enumerate(cands) if len(c))
            width = -(-span // 32) * 32
            index = torch.arange(nqb)[:, None] * bs + offset + torch.arange(width)[None, :]  # (NQB, K)
            valid = (index >= 0) & (index < t)
            index = index.clamp(0, t - 1)
        else:
            index = torch.zeros(nqb, width, dtype=torch.long)
            valid = torch.zeros(nqb, width, dtype=torch.bool)
            for b, c in enumerate(cands):
                index[b, : len(c)] = c
                valid[b, : len(c)] = True
        q = torch.arange(nqb * bs)
        if order is not None:
            q = torch.cat([order, torch.full((nqb * bs - t,), t)])  # padding rows get position t
        qperm = q if order is not None else None
        q = q.view(nqb, bs, 1)  # (NQB, BS, 1) query positions
        mask = self.allowed(q, index[:, None, :]) & valid[:, None, :] & (q < t)  # (NQB, BS, K)
        g = self.global_queries(t)
        pairs = 0
        if len(g):
            flat = mask.view(nqb * bs, width)
            flat[g] = False  # computed densely instead
            keys = torch.arange(t)
            pairs = int(self.allowed(g[:, None], keys[None, :]).sum())
        pairs += int(mask.sum())
        return Layout(index.to(device), mask.to(device), g.to(device), pairs, bs, t, offset,
                      None if qperm is None else qperm.to(device))


def arange_clip(start: int, stop: int, t: int) -> torch.Tensor:
    lo = max(start, 0)
    return torch.arange(lo, max(lo, min(stop, t)), dtype=torch.long)


def union(*parts: torch.Tensor) -> torch.Tensor:
    return torch.unique(torch.cat(parts)) if parts else torch.empty(0, dtype=torch.long)


def full_pairs(t: int, causal: bool) -> int:
    """Pairs of full attention: t(t+1)/2 causal, t^2 bidirectional."""
    return t * (t + 1) // 2 if causal else t * t
