"""State-space token mixers: Mamba (Gu & Dao 2023) and Mamba-2 (Dao & Gu 2024), as layers of the stack.

``mamba``:  in_proj -> (x, z); x -> causal depthwise conv1d (kernel d_conv) -> SiLU; x_proj(x) -> (dt, B, C);
            dt = softplus(dt_proj(dt)); selective scan with A = -exp(A_log) (S4D-real init) per channel and
            state, plus the D skip; y * SiLU(z); out_proj. State (b, d_inner, d_state).
``mamba2``: in_proj -> (z, xBC, dt); xBC -> conv1d -> SiLU -> (x, B, C) with B, C shared by groups of heads;
            dt = softplus(dt + dt_bias); one scalar A per head; SSD scan (heads of head_dim channels) plus the
            D skip; gated RMSNorm(y * SiLU(z)) (grouped by n_groups, as Hugging Face's Mamba2); out_proj.
            State (b, n_heads, head_dim, d_state).

Training runs the chunked scans of ``ssm_scan.py`` in fp32 (fp64 in an fp64 model) whatever the autocast;
generation carries ``SSMState``: the conv window of the last d_conv - 1 inputs and the SSM state, O(1) in the
generated length. Layouts and parameter names follow Hugging Face's ``MambaMixer`` / ``Mamba2Mixer``, so their
weights copy across by name (``plugins/decoder/hf_mamba.py``).

Padding: right padding only, like the recurrent mixers (``check_right_padding``). Padded positions are not
zeroed (Hugging Face zeroes them, which makes left padding harmless there); with right padding no real position
comes after them, so they cannot change a real position's output, and padding elsewhere is refused.

Statistics (family ``ssm``, returned as values, logged per layer by the core): ``ssm/dt`` mean step size
Delta, ``ssm/state_norm`` L2 norm of the state after the sequence (every forward); on validation batches
(``record_stats``) also ``ssm/decay`` mean per-step decay exp(Delta A) and ``ssm/long_memory`` the share of
(channel, state) decays above 0.99 (a memory horizon beyond ~100 steps).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import Metric

from framework.config_schema import check
from framework.metrics import LayerIdMean

from .conv_state import ConvScanState
from .recurrent import check_right_padding
from .spec import LayerContext, MixerResult, MixerSpec
from .ssm_scan import causal_conv, selective_scan, selective_step, ssd_scan, ssd_step

LONG_MEMORY = 0.99  # a decay above this keeps more than 1/e of the state for ~100 steps


@dataclass
class SSMConfig:
    d_state: int = 16             # state size N per channel (mamba) or per head channel (mamba2)
    d_conv: int = 4               # kernel of the causal depthwise conv1d before the scan
    expand: int = 2               # d_inner = expand * d_model
    dt_rank: int | Literal["auto"] = "auto"  # mamba: rank of the dt projection; auto = ceil(d_model / 16)
    dt_min: float = 0.001         # initial step sizes dt are log-uniform in [dt_min, dt_max]
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4   # ... and at least this
    conv_bias: bool = True        # bias in the conv1d
    chunk_size: int = 64          # chunk length of the training scans (any length works: a speed/memory knob)
    head_dim: int = 64            # mamba2: channels per head; n_heads = d_inner / head_dim
    n_groups: int = 1             # mamba2: groups of heads sharing B and C (must divide n_heads)

    def __post_init__(self) -> None:
        for name in ("d_state", "d_conv", "expand", "chunk_size", "head_dim", "n_groups"):
            value = getattr(self, name)
            check(value >= 1, f"ssm.{name}", f"must be an integer >= 1, got {value}")
        check(self.dt_rank == "auto" or self.dt_rank >= 1, "ssm.dt_rank",
              f"must be 'auto' or an integer >= 1, got {self.dt_rank!r}")
        check(0 < self.dt_min, "ssm.dt_min", f"must be > 0, got {self.dt_min}")
        check(self.dt_min <= self.dt_max, "ssm.dt_max", f"must be >= dt_min ({self.dt_min}), got {self.dt_max}")
        check(0 < self.dt_init_floor <= self.dt_max, "ssm.dt_init_floor",
              f"must be in (0, dt_max={self.dt_max}], got {self.dt_init_floor}")


class SSMState(ConvScanState):
    """The decode state of one SSM layer: ``conv`` (b, conv channels, d_conv - 1) and ``ssm``, the scan state."""

    STATE = "ssm"
    ssm: torch.Tensor | None


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """fp32 for the scans (bf16/fp16 activations under autocast), fp64 in an fp64 model."""
    return torch.promote_types(x.dtype, torch.float32)


def dt_bias_init(size: int, opts: SSMConfig) -> torch.Tensor:
    """Inverse softplus of step sizes log-uniform in [dt_min, dt_max], floored at dt_init_floor (Mamba's init)."""
    dt = torch.exp(torch.rand(size) * (math.log(opts.dt_max) - math.log(opts.dt_min)) + math.log(opts.dt_min))
    dt = dt.clamp(min=opts.dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


class _SSMBase(nn.Module):
    # The decay statistics cost a pass over (b, T, d_inner, d_state): validation batches only (the loop switches
    # this on there, as for attention entropy); dt and the state norm are reported on every forward.
    record_stats = False

    def new_state(self) -> SSMState:
        return SSMState()

    def _conv(self, x: torch.Tensor, state: SSMState | None) -> torch.Tensor:
        out, window = causal_conv(x, self.conv1d.weight, self.conv1d.bias, state.conv if state is not None else None)
        if state is not None:
            state.conv = window
        return F.silu(out)

    @torch.no_grad()
    def _stats(self, dt: torch.Tensor, log_decay, h: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: ANN001
        """dt: step sizes; log_decay() gives dt * A (only called while recording); h: the state after the sequence."""
        stats = {"dt": dt.mean().float(), "state_norm": h.flatten(1).norm(dim=1).mean().float()}
        if self.record_stats:
            decay = torch.exp(log_decay())
            stats.update(decay=decay.mean().float(), long_memory=(decay > LONG_MEMORY).float().mean())
        return stats


class Mamba(_SSMBase):
    """Mamba-1's mixer (Hugging Face ``MambaMixer`` layout and names)."""

    def __init__(self, d_model: int, opts: SSMConfig, bias: bool) -> None:
        super().__init__()
        self.opts = opts
        self.d_inner = opts.expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if opts.dt_rank == "auto" else opts.dt_rank
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, opts.d_conv, groups=self.d_inner, bias=opts.conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * opts.d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, opts.d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        for p in (self.A_log, self.D, self.dt_proj.bias):
            p._no_weight_decay = True  # Mamba's convention (framework.optim decays 2-D tensors: A_log is one)
        self.init_weights(0.02, 0.02)

    @torch.no_grad()
    def init_weights(self, std: float, out_std: float) -> None:
        n = self.opts.d_state
        self.A_log.copy_(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).expand(self.d_inner, n))  # S4D-real
        self.D.fill_(1.0)
        bound = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        self.dt_proj.bias.copy_(dt_bias_init(self.d_inner, self.opts))
        nn.init.normal_(self.out_proj.weight, std=out_std)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                state: SSMState | None = None) -> MixerResult:
        if state is None or state.ssm is None:
            check_right_padding(attention_mask)
        n = self.opts.d_state
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        xs = self._conv(xs, state)
        dt, B, C = self.x_proj(xs).split([self.dt_rank, n, n], dim=-1)
        dt = self.dt_proj(dt)
        ct = compute_dtype(xs)
        with torch.autocast(x.device.type, enabled=False):
            dt, xs_c, z = F.softplus(dt.to(ct)), xs.to(ct), z.to(ct)
            A = -torch.exp(self.A_log.to(ct))
            h0 = state.ssm if state is not None else None
            B, C = B.to(ct), C.to(ct)
            if x.shape[1] == 1 and state is not None:
                y, h = selective_step(h0, xs_c[:, 0], dt[:, 0], A, B[:, 0], C[:, 0])
                y = y[:, None]
            else:
                y, h = selective_scan(xs_c, dt, A, B, C, self.opts.chunk_size, h0)
            y = (y + xs_c * self.D.to(ct)) * F.silu(z)
            stats = self._stats(dt, lambda: dt[..., None] * A, h)  # (b, T, D, N) decays
        if state is not None:
            state.ssm = h
        return MixerResult(self.out_proj(y.to(x.dtype)), None, stats)


class GatedRMSNorm(nn.Module):
    """RMSNorm(y * SiLU(z)) over groups of the channels, in fp32 (Mamba-2's norm before out_proj; HF's
    ``MambaRMSNormGated`` with norm_before_gate=False)."""

    def __init__(self, dim: int, groups: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.groups, self.eps = groups, eps

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        ct = compute_dtype(y)
        h = y.to(ct) * F.silu(z.to(ct))
        g = h.unflatten(-1, (self.groups, -1))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight.to(ct) * g.flatten(-2)


class Mamba2(_SSMBase):
    """Mamba-2's mixer (Hugging Face ``Mamba2Mixer`` layout and names: in_proj gives z, xBC, dt in that order)."""

    def __init__(self, d_model: int, opts: SSMConfig, bias: bool, norm_eps: float) -> None:
        super().__init__()
        self.opts = opts
        self.d_inner = opts.expand * d_model
        check(self.d_inner % opts.head_dim == 0, "ssm.head_dim",
              f"must divide d_inner = expand * d_model = {self.d_inner}, got {opts.head_dim}")
        self.n_heads = self.d_inner // opts.head_dim
        check(self.n_heads % opts.n_groups == 0, "ssm.n_groups",
              f"must divide the number of heads (d_inner / head_dim = {self.n_heads}), got {opts.n_groups}")
        self.conv_dim = self.d_inner + 2 * opts.n_groups * opts.d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.n_heads, bias=bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, opts.d_conv, groups=self.conv_dim, bias=opts.conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(self.n_heads))
        self.A_log = nn.Parameter(torch.empty(self.n_heads))
        self.D = nn.Parameter(torch.empty(self.n_heads))
        self.norm = GatedRMSNorm(self.d_inner, opts.n_groups, norm_eps)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        for p in (self.A_log, self.D, self.dt_bias):
            p._no_weight_decay = True
        self.init_weights(0.02, 0.02)

    @torch.no_grad()
    def init_weights(self, std: float, out_std: float) -> None:
        self.A_log.copy_(torch.log(torch.empty(self.n_heads).uniform_(1.0, 16.0)))  # A in [-16, -1] (Mamba-2's init)
        self.D.fill_(1.0)
        self.dt_bias.copy_(dt_bias_init(self.n_heads, self.opts))
        nn.init.normal_(self.out_proj.weight, std=out_std)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                state: SSMState | None = None) -> MixerResult:
        if state is None or state.ssm is None:
            check_right_padding(attention_mask)
        b, t, _ = x.shape
        g, n, p = self.opts.n_groups, self.opts.d_state, self.opts.head_dim
        z, xbc, dt = self.in_proj(x).split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        xs, B, C = self._conv(xbc, state).split([self.d_inner, g * n, g * n], dim=-1)
        ct = compute_dtype(xs)
        with torch.autocast(x.device.type, enabled=False):
            dt = F.softplus(dt.to(ct) + self.dt_bias.to(ct))  # (b, T, H)
            A = -torch.exp(self.A_log.to(ct))
            xs_c = xs.to(ct).view(b, t, self.n_heads, p)
            B, C = B.to(ct).view(b, t, g, n), C.to(ct).view(b, t, g, n)
            h0 = state.ssm if state is not None else None
            if t == 1 and state is not None:
                y, h = ssd_step(h0, xs_c[:, 0], dt[:, 0], A, B[:, 0], C[:, 0])
                y = y[:, None]
            else:
                y, h = ssd_scan(xs_c, dt, A, B, C, self.opts.chunk_size, h0)
            y = (y + xs_c * self.D.to(ct)[:, None]).reshape(b, t, self.d_inner)
            y = self.norm(y, z)
            stats = self._stats(dt, lambda: dt * A, h)  # (b, T, H) decays
        if state is not None:
            state.ssm = h
        return MixerResult(self.out_proj(y.to(x.dtype)), None, stats)


def _build_mamba(ctx: LayerContext) -> Mamba:
    return Mamba(ctx.config.d_model, ctx.options, ctx.config.bias)


def _build_mamba2(ctx: LayerContext) -> Mamba2:
    return Mamba2(ctx.config.d_model, ctx.options, ctx.config.bias, ctx.config.norm_eps)


def ssm_metrics(cfg, layer_ids: list[int]) -> dict[str, Metric]:  # noqa: ANN001
    return {
        # Mean step size Delta = softplus(...) of each SSM layer: how fast it moves along its ODE.
        "ssm/dt": LayerIdMean("ssm_dt", layer_ids),
        # Mean per-step decay exp(Delta A) over channels, states and tokens (1 = keeps everything).
        "ssm/decay": LayerIdMean("ssm_decay", layer_ids),
        # Share of decays above 0.99: channels whose memory reaches beyond ~100 tokens.
        "ssm/long_memory": LayerIdMean("ssm_long_memory", layer_ids),
        # L2 norm of the SSM state after the sequence (growth flags instability).
        "ssm/state_norm": LayerIdMean("ssm_state_norm", layer_ids),
    }


MAMBA = MixerSpec(
    name="mamba", role="token", family="ssm", options="ssm", causal=True, carries="recurrent", context_limited=False,
    description="Mamba (selective SSM, Gu & Dao 2023): chunked scan in training, O(1) decode state (conv window + SSM)",
    build=_build_mamba, metrics=ssm_metrics,
)
MAMBA2 = MixerSpec(
    name="mamba2", role="token", family="ssm", options="ssm", causal=True, carries="recurrent", context_limited=False,
    description="Mamba-2 (SSD, Dao & Gu 2024): scalar decay per head, chunked duality form, O(1) decode state",
    build=_build_mamba2, metrics=ssm_metrics,
)
