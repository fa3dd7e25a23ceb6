"""Scan kernels of the state-space token mixers (``framework/mixers/ssm.py``), pure PyTorch.

Both recurrences are linear in the state with a per-step decay exp(dt * A) in (0, 1] (dt > 0, A < 0). Every
cumulative decay below is a product of such numbers, or exp() of a sum of log-decays that is <= 0: nothing can
overflow however long the chunk or strong the decay, and a long product underflows to the 0 it tends to.

``selective_scan`` (Mamba-1):  h_t = exp(dt_t[d] A[d, n]) h_{t-1}[d, n] + dt_t[d] B_t[n] x_t[d],  y_t[d] = C_t . h_t[d]
    The decay differs per channel d *and* state n, so Mamba-2's duality form (an L x L decay matrix per head)
    would need an (L, L, D, N) tensor per chunk, L times the work of the scan itself. Instead the sequence is cut
    into chunks of L steps that all run at once (L fused steps over b x T/L x D x N states, not T steps over
    b x D x N), and the cumulative decay within each chunk carries the state from one chunk to the next and adds
    each chunk-start state's decayed share to every position. Its backward is written out (``_SelectiveScan``):
    the same chunked scan run backwards in time, not autograd through each step.
``ssd_scan`` (Mamba-2, state space duality): one scalar decay per head, so within a chunk the scan is a masked
    "attention" C_t . B_s exp(segsum) over L x L per head (segment sums in log space, every exponent <= 0),
    between chunks the (H, P, N) states are passed along with the chunk's total decay; autograd differentiates it.
``*_step``: one decode step of each, O(1) in the generated length.

Everything here runs in the dtype it is given; the mixers pass fp32 (fp64 in fp64 models), whatever the
autocast, and switch autocast off around these calls.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def _pad_time(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Zeros appended along dim 1 (time). A padded step has dt = 0: decay 1 and no input, so it leaves the state
    exactly as it was (the final state is the one after the last real step)."""
    if pad == 0:
        return x
    return torch.cat([x, x.new_zeros(x.shape[0], pad, *x.shape[2:])], dim=1)


def _chunking(t: int, chunk_size: int) -> tuple[int, int, int]:
    length = max(1, min(chunk_size, t))
    n_chunks = -(-t // length)
    return length, n_chunks, n_chunks * length - t


# ---- Mamba-1 -------------------------------------------------------------------------------------


def _scan_(decay: torch.Tensor, inputs: torch.Tensor, h0: torch.Tensor | None, length: int) -> torch.Tensor:
    """h[t] = decay[t] * h[t - 1] + inputs[t], h[-1] = h0 (None: zeros); time-major (T, ...) with T a multiple of
    ``length``. In place: ``inputs`` becomes h (no autograd; the caller owns it).

    1. Within every chunk at once, from a zero state: ``length`` fused multiply-adds, each over all chunks.
    2. The cumulative decay since each chunk's start, P[l] = decay[0] ... decay[l], the same way (products of
       numbers in (0, 1]: they cannot overflow, and a long product underflows to the 0 it tends to; no
       differences are taken, so no log space is needed here, unlike Mamba-2's segment sums).
    3. The chunk-start states one chunk after the other (the previous chunk's end, corrected), then every
       position's share of its chunk-start state, P[l] * start, in one pass.
    """
    n_chunks = decay.shape[0] // length
    dv, hv = decay.view(n_chunks, length, *decay.shape[1:]), inputs.view(n_chunks, length, *inputs.shape[1:])
    for step in range(1, length):
        torch.addcmul(hv[:, step], dv[:, step], hv[:, step - 1], out=hv[:, step])
    if n_chunks == 1 and h0 is None:
        return inputs
    prod = torch.empty_like(dv)
    prod[:, 0] = dv[:, 0]
    for step in range(1, length):
        torch.mul(prod[:, step - 1], dv[:, step], out=prod[:, step])
    starts = torch.empty_like(hv[:, 0])
    start = h0 if h0 is not None else torch.zeros_like(starts[0])
    for c in range(n_chunks):
        starts[c] = start
        start = torch.addcmul(hv[c, -1], prod[c, -1], start)
    first = 0 if h0 is not None else 1
    hv[first:].addcmul_(prod[first:], starts[first:, None])
    return inputs


def _scan_reverse_(decay: torch.Tensor, inputs: torch.Tensor, end: torch.Tensor | None, length: int) -> torch.Tensor:
    """The adjoint of ``_scan_``: g[t] = decay[t + 1] * g[t + 1] + inputs[t], g[T] = end (decay[T] = 1), by the same
    three steps run from the right. In place into ``inputs``."""
    n_chunks = decay.shape[0] // length
    dv, gv = decay.view(n_chunks, length, *decay.shape[1:]), inputs.view(n_chunks, length, *inputs.shape[1:])
    for step in range(length - 2, -1, -1):
        torch.addcmul(gv[:, step], dv[:, step + 1], gv[:, step + 1], out=gv[:, step])
    if n_chunks == 1 and end is None:
        return inputs
    prod = torch.empty_like(dv)  # prod[l] = decay[l + 1] ... decay[L - 1] within the chunk
    prod[:, -1] = 1.0
    for step in range(length - 2, -1, -1):
        torch.mul(prod[:, step + 1], dv[:, step + 1], out=prod[:, step])
    incoming = torch.empty_like(gv[:, 0])  # what enters each chunk's last position from the right
    come = end if end is not None else torch.zeros_like(incoming[0])
    for c in range(n_chunks - 1, -1, -1):
        incoming[c] = come
        come = dv[c, 0] * torch.addcmul(gv[c, 0], prod[c, 0], come)
    last = n_chunks if end is not None else n_chunks - 1
    gv[:last].addcmul_(prod[:last], incoming[:last, None])
    return inputs


def _time_major(v: torch.Tensor, pad: int) -> torch.Tensor:
    """(b, T, ...) -> (T + pad, b, ...), contiguous, zeros appended (a padded step has dt = 0: decay 1, no input)."""
    v = v.transpose(0, 1)
    if pad:
        v = torch.cat([v, v.new_zeros(pad, *v.shape[1:])], dim=0)
    return v.contiguous()


def _outer(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(T, b, D), (T, b, N) -> (T, b, D, N) u[..., d] v[..., n] (as an einsum: several times faster on CPU than a
    broadcast multiply)."""
    return torch.einsum("tbd,tbn->tbdn", u, v)


class _SelectiveScan(torch.autograd.Function):
    """The chunked scan with a hand-written backward: the gradient of a linear recurrence is the same recurrence
    run backwards in time (g_t = decay_{t+1} g_{t+1} + C_t dy_t), so backward is one more chunked scan and a few
    elementwise passes instead of autograd through every step. Saves the decays and states, (T, b, D, N) each."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, h0, chunk_size):  # noqa: ANN001, ANN205
        ctx.set_materialize_grads(False)
        t = x.shape[1]
        length, _, pad = _chunking(t, chunk_size)
        x_t, dt_t, B_t, C_t = (_time_major(v, pad) for v in (x, dt, B, C))  # (T', b, D) / (T', b, N)
        decay = torch.exp(dt_t[..., None] * A)  # (T', b, D, N), in (0, 1]
        states = _scan_(decay, _outer(dt_t * x_t, B_t), h0, length)
        y = torch.matmul(states, C_t[..., None])[..., 0]  # (T', b, D)
        ctx.save_for_backward(x_t, dt_t, A, B_t, C_t, h0, decay, states)
        ctx.shape = (t, length, pad)
        return y[:t].transpose(0, 1), states[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, d_final):  # noqa: ANN001, ANN205
        x_t, dt_t, A, B_t, C_t, h0, decay, states = ctx.saved_tensors
        t, length, pad = ctx.shape
        dy_t = _time_major(dy, pad) if dy is not None else torch.zeros_like(x_t)
        d_c = torch.matmul(dy_t[..., None, :], states)[..., 0, :]  # (T', b, N)
        g = _scan_reverse_(decay, _outer(dy_t, C_t), d_final, length)  # dL/dh_t
        d_dtx = torch.matmul(g, B_t[..., None])[..., 0]  # (T', b, D)
        d_b = torch.matmul((dt_t * x_t)[..., None, :], g)[..., 0, :]  # (T', b, N)
        d_h0 = g[0] * decay[0] if h0 is not None else None
        # dL/d(dt A) = g_t * h_{t-1} * decay_t (h_{-1} = h0)
        d_log_decay = g.mul_(decay)
        d_log_decay[1:] *= states[:-1]
        if h0 is not None:
            d_log_decay[0] *= h0
        else:
            d_log_decay[0] = 0.0
        d_a = (d_log_decay * dt_t[..., None]).sum((0, 1))
        d_dt = d_dtx * x_t + d_log_decay.mul_(A).sum(-1)
        back = lambda v: v[:t].transpose(0, 1)  # noqa: E731
        return back(d_dtx * dt_t), back(d_dt), d_a, back(d_b), back(d_c), d_h0, None


def selective_scan(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk_size: int,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1's selective scan, chunked.

    x, dt: (b, T, D) (dt > 0, after softplus); A: (D, N), negative; B, C: (b, T, N); h0: (b, D, N) or None (zeros).
    Returns y (b, T, D) = C_t . h_t (the D skip and the gate are the caller's) and the final state (b, D, N).
    """
    return _SelectiveScan.apply(x, dt, A, B, C, h0, chunk_size)


def selective_step(
    h: torch.Tensor | None, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: h (b, D, N) or None (zeros), x, dt (b, D), B, C (b, N) -> (y (b, D), new h)."""
    inputs = (dt * x)[..., None] * B[:, None, :]
    h = inputs if h is None else torch.addcmul(inputs, torch.exp(dt[..., None] * A), h.to(x.dtype))
    return torch.matmul(h, C[..., None])[..., 0], h


# ---- Mamba-2 (SSD) -------------------------------------------------------------------------------


def segsum(log_decay: torch.Tensor) -> torch.Tensor:
    """(..., L) -> (..., L, L): out[i, j] = sum_{k=j+1..i} log_decay[k] for i >= j, -inf above the diagonal.

    Summed as masked cumulative sums, not as the difference of two cumulative sums, so a long chunk of strong
    decays loses no precision to cancellation; exp() of it is the causal decay matrix, every entry in [0, 1]."""
    length = log_decay.shape[-1]
    x = log_decay[..., None].expand(*log_decay.shape, length)  # x[..., k, j] = log_decay[k]
    strictly_lower = torch.tril(torch.ones(length, length, dtype=torch.bool, device=log_decay.device), diagonal=-1)
    x = x.masked_fill(~strictly_lower, 0.0)
    out = torch.cumsum(x, dim=-2)
    lower = torch.tril(torch.ones(length, length, dtype=torch.bool, device=log_decay.device))
    return out.masked_fill(~lower, float("-inf"))


def _heads(v: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(..., G, N) -> (..., H, N): each of the G groups' B or C shared by H / G consecutive heads."""
    groups = v.shape[-2]
    return v if groups == n_heads else v.repeat_interleave(n_heads // groups, dim=-2)


def ssd_scan(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk_size: int,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-2's scan in its chunked state-space-duality form.

    x: (b, T, H, P); dt: (b, T, H) (> 0); A: (H,), negative; B, C: (b, T, G, N) with G dividing H;
    h0: (b, H, P, N) or None (zeros). Returns y (b, T, H, P) (no D skip) and the final state (b, H, P, N).
    """
    b, t, n_heads, p = x.shape
    length, n_chunks, pad = _chunking(t, chunk_size)
    B, C = _heads(B, n_heads), _heads(C, n_heads)
    x, dt, B, C = (_pad_time(v, pad) for v in (x, dt, B, C))
    n = B.shape[-1]
    x = (x * dt[..., None]).view(b, n_chunks, length, n_heads, p)  # dt_s x_s
    B = B.view(b, n_chunks, length, n_heads, n)
    C = C.view(b, n_chunks, length, n_heads, n)
    log_decay = (dt * A).view(b, n_chunks, length, n_heads).permute(0, 3, 1, 2)  # (b, H, c, L), <= 0
    cum = torch.cumsum(log_decay, dim=-1)
    # 1. Within each chunk: y_l = sum_{s <= l} (C_l . B_s) exp(sum_{s<k<=l} log_decay_k) dt_s x_s.
    scores = torch.einsum("bclhn,bcshn->bhcls", C, B) * torch.exp(segsum(log_decay))
    y = torch.einsum("bhcls,bcshp->bclhp", scores, x)
    # 2. Each chunk's own end state (from zero): sum_s exp(cum_L - cum_s) B_s dt_s x_s.
    to_end = torch.exp(cum[..., -1:] - cum)  # (b, H, c, L), <= 1
    chunk_states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, to_end, x)
    # 3. Across chunks: pass the state along with each chunk's total decay.
    chunk_decay = torch.exp(cum[..., -1])  # (b, H, c)
    start = h0.to(x.dtype) if h0 is not None else None
    starts = []
    for c in range(n_chunks):
        starts.append(start)
        own = chunk_states[:, c]
        start = own if start is None else own + chunk_decay[:, :, c, None, None] * start
    final = start
    # 4. Each chunk-start state's contribution: C_l . (exp(cum_l) h_start).
    if any(s is not None for s in starts):
        zeros = x.new_zeros(b, n_heads, p, n)
        carried = torch.stack([s if s is not None else zeros for s in starts], 1)  # (b, c, H, P, N)
        y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", C, carried, torch.exp(cum))
    return y.reshape(b, n_chunks * length, n_heads, p)[:, :t], final


def ssd_step(
    h: torch.Tensor | None, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: h (b, H, P, N) or None, x (b, H, P), dt (b, H), B, C (b, G, N) -> (y (b, H, P), new h)."""
    n_heads = x.shape[1]
    B, C = _heads(B, n_heads), _heads(C, n_heads)
    inputs = (dt[..., None] * x)[..., None] * B[:, :, None, :]
    h = inputs if h is None else inputs + torch.exp(dt * A)[..., None, None] * h.to(x.dtype)
    return torch.matmul(h, C[..., None])[..., 0], h


# ---- the causal depthwise convolution both mixers put before the scan ------------------------------


def causal_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, window: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal conv1d over time: x (b, T, C), weight (C, 1, K); ``window`` (b, C, K - 1) holds the last
    K - 1 inputs before x (None: zeros, a sequence start). Returns (out (b, T, C), the new window)."""
    b, t, channels = x.shape
    k = weight.shape[-1]
    xt = x.transpose(1, 2)
    if window is None:
        window = xt.new_zeros(b, channels, k - 1)
    full = torch.cat([window.to(xt.dtype), xt], dim=-1)  # (b, C, K - 1 + T)
    if t == 1:
        # One decode step: a multiply-and-sum over K taps. conv1d here pays oneDNN's set-up per call and, under
        # bf16 autocast on CPU, falls back to slow_conv2d: measured at d_inner 512, 1 thread, 168 -> 48 us in fp32 and
        # 4.2 ms -> 0.11 ms under bf16 autocast.
        out = (full * weight[:, 0].to(full.dtype)).sum(-1, keepdim=True)
        if bias is not None:
            out = out + bias.to(out.dtype)[:, None]
    else:
        out = F.conv1d(full, weight, bias, groups=channels)  # (b, C, T)
    window = full[..., full.shape[-1] - (k - 1):]
    # After a prompt, copy the K - 1 columns out: a view would keep the whole (b, C, K - 1 + T) input alive in the
    # decode state until the first decode step (T times the state's size).
    return out.transpose(1, 2), window.clone() if t > 1 else window
