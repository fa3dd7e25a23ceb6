"""The chunkwise kernel of the linear-attention family: gated linear attention and the gated delta rule.

Per head, a state S (Dk, Dv) decays by a_t = exp(g_t) <= 1 each step and is written by the key/value of the step:

    linear attention:   S_t = a_t S_{t-1} + k_t v_t^T
    gated delta rule:   S_t = a_t S_{t-1} + beta_t k_t (v_t - a_t S_{t-1}^T k_t)^T      (Yang et al. 2024)
    output:             o_t = S_t^T q_t

The delta rule writes only what the decayed state does not already predict for k_t (an online regression step on
S with rate beta_t), so a key's old value is replaced rather than summed into.

Training form (``chunked``): the sequence is cut into chunks of C positions. Inside a chunk, with G_i the
cumulative log decay and delta_j the written values (v_j for linear attention), everything is matmuls:

    o_i     = e^{G_i} q_i^T S_0 + sum_{j <= i} e^{G_i - G_j} (q_i . k_j) delta_j
    S_C     = e^{G_C} S_0 + sum_j e^{G_C - G_j} k_j delta_j^T
    delta   = T (beta v) - T (beta e^G k) S_0,   T = (I + A)^{-1},  A_ij = beta_i e^{G_i - G_j} (k_i . k_j), j < i

(T by one batched unit-triangular solve for all chunks at once, the WY/UT form of DeltaNet). Only the pass over
chunks that carries S is sequential: T / C steps, not T, each one or two small matmuls; the outputs are read
from the stacked entering states after it. Every decay factor is e^{<= 0}: no overflow.
``step`` is the O(1) recurrence for decoding. Both run in fp32 under autocast.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def chunked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor | None, beta: torch.Tensor | None,
    chunk_size: int, state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k: (B, H, T, Dk); v: (B, H, T, Dv); log_decay: (B, H, T) <= 0 or None (no decay); beta: (B, H, T) or None
    (linear attention: no delta rule); state: (B, H, Dk, Dv) or None (zeros). Returns (o (B, H, T, Dv), final state)."""
    b, h, t, dk = k.shape
    dv = v.shape[-1]
    c = min(chunk_size, t)
    pad = (-t) % c
    if log_decay is None:
        log_decay = q.new_zeros(b, h, t)
    if pad:  # zero keys and values, no decay: padded positions leave the state as it is
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        log_decay = F.pad(log_decay, (0, pad))
        beta = F.pad(beta, (0, pad)) if beta is not None else None
    n = (t + pad) // c
    q, k, v = (x.reshape(b, h, n, c, -1) for x in (q, k, v))
    g = log_decay.reshape(b, h, n, c).cumsum(-1)  # G_i within each chunk
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    pair = (g[..., :, None] - g[..., None, :]).masked_fill(~causal, float("-inf")).exp()  # e^{G_i - G_j}, j <= i
    scores = (q @ k.transpose(-1, -2)) * pair  # (B, H, N, C, C)
    if beta is None:
        w, u = v, None
    else:
        beta = beta.reshape(b, h, n, c, 1)
        # A = beta_i e^{G_i - G_j} (k_i . k_j): zero above the diagonal already (pair), and the solve reads neither its
        # diagonal (unitriangular: ones) nor the upper half, so A goes in as it is: no eye, no tril copy.
        system = ((k * beta) @ k.transpose(-1, -2)) * pair
        rhs = torch.cat([beta * v, beta * g.exp()[..., None] * k], dim=-1)  # solve both right-hand sides at once
        w, u = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True).split([dv, dk], dim=-1)
    q_in = q * g.exp()[..., None]  # reads of the entering state
    k_out = k * (g[..., -1:] - g).exp()[..., None]  # writes, decayed to the chunk's end
    chunk_decay = g[..., -1].exp()[..., None, None]  # (B, H, N, 1, 1)
    s = q.new_zeros(b, h, dk, dv) if state is None else state.to(q.dtype)
    # Only the state is carried through the loop; the outputs of every chunk are two batched matmuls after it, over
    # the stacked entering states. One unbind per tensor, not an index per chunk: each indexed slice's backward
    # would write a full-size zero gradient (measured at T = 4096: 65% of a training step in fill_ / add_).
    ds, entering = chunk_decay.unbind(2), []
    if u is None:  # linear attention: the writes do not read the state, so they are one batched matmul too
        writes = (k_out.transpose(-1, -2) @ w).unbind(2)
        for i in range(n):
            entering.append(s)
            s = s * ds[i] + writes[i]
        delta = w
    else:
        ws, us, ks, deltas = w.unbind(2), u.unbind(2), k_out.unbind(2), []
        for i in range(n):
            entering.append(s)
            deltas.append(ws[i] - us[i] @ s)
            s = s * ds[i] + ks[i].transpose(-1, -2) @ deltas[i]
        delta = torch.stack(deltas, dim=2)
    o = q_in @ torch.stack(entering, dim=2) + scores @ delta  # (B, H, N, C, Dv)
    o = o.reshape(b, h, n * c, dv)[:, :, :t]
    return o, s


def step(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor | None, beta: torch.Tensor | None,
    state: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One position: q, k (B, H, Dk); v (B, H, Dv); log_decay, beta (B, H) or None. Returns (o (B, H, Dv), state)."""
    s = q.new_zeros(*k.shape, v.shape[-1]) if state is None else state.to(q.dtype)
    if log_decay is not None:
        s = s * log_decay.exp()[..., None, None]
    delta = v if beta is None else beta[..., None] * (v - (s * k[..., None]).sum(-2))
    s = s + k[..., None] * delta[..., None, :]
    return (s * q[..., None]).sum(-2), s
