"""Griffin's recurrent block (De et al. 2024, RecurrentGemma) as a token mixer of the stack: ``rglru``.

    y   = act(linear_y(x))                                       the gate branch (Griffin: GeLU, tanh approx.)
    u   = conv_1d(linear_x(x))                                   causal depthwise temporal conv, conv1d_width taps
    i_t = sigmoid(u_t W_i + b_i),  r_t = sigmoid(u_t W_r + b_r)  block-diagonal gates: n_heads blocks of width
                                                                 lru_width / n_heads (RecurrentGemma's layout)
    log a_t = -c r_t softplus(recurrent_param),  c = 8           a_t = sigmoid(-recurrent_param)^(c r_t) in (0, 1]
    h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t * u_t)              the RG-LRU; at a sequence start h_{-1} = 0 and the
                                                                 sqrt(1 - a^2) normalisation is replaced by 1
    out = linear_out(h * y)

exactly as Hugging Face's ``RecurrentGemmaRecurrentBlock`` computes it, with its parameter names and layouts
(``linear_y``, ``linear_x``, ``conv_1d``, ``rg_lru.{recurrent_param, input_gate_*, recurrent_gate_*}``,
``linear_out``), so weights copy across by name (``plugins/decoder/hf_recurrent_gemma.py``). ``recurrent_param``
is Hugging Face's parameter (minus the paper's Lambda: a = sigma(Lambda)^(c r)); the sqrt has Griffin's gradient
bounded at 1000 (its bf16 safeguard as sqrt(1 - a^2) -> 0).

Training runs the linear recurrence h_t = a_t h_{t-1} + b_t as a chunked scan (``linear_scan``: the chunks' steps
all at once, cumulative products in (0, 1] carry the state across chunks, the backward is the same scan run in
reverse; the kernels are Mamba-1's, ``ssm_scan._scan_``), in fp32 whatever the autocast (fp64 in an fp64 model).
Generation carries ``RGLRUState``: the last conv1d_width - 1 conv inputs and h, O(1) in the generated length.

Padding: right padding only, like the other recurrent mixers (``check_right_padding``).

Statistics (family ``rglru``, returned as values, every forward): ``rglru/decay`` mean a_t, ``rglru/long_memory``
share of a_t above 0.99 (a memory horizon beyond ~100 steps), ``rglru/input_gate`` mean i_t and
``rglru/state_norm`` L2 norm of h after the sequence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import Metric

from framework.config_schema import check
from framework.metrics import LayerIdMean
from framework.nn.feedforward import Activation, activation_fn

from .conv_state import ConvScanState
from .recurrent import check_right_padding
from .spec import LayerContext, MixerResult, MixerSpec
from .ssm_scan import _chunking, _scan_, _scan_reverse_, causal_conv

C = 8.0  # Griffin's fixed scale of the recurrence gate's exponent
LONG_MEMORY = 0.99
MAX_SQRT_GRADIENT = 1000.0  # Griffin's bound on d sqrt(x) / dx (bf16 training safeguard)
W_INIT_VARIANCE_SCALE = 0.01  # Griffin's init of the conv and gate weights (variance 0.01 / fan_in)


@dataclass
class RGLRUConfig:
    lru_width: int | None = None  # width of the recurrence (and of linear_x/y, the conv); null = d_model
    conv1d_width: int = 4         # taps of the causal temporal conv1d before the RG-LRU
    n_heads: int | None = None    # blocks of the block-diagonal gate weights; null = the stack's n_heads (as
                                  # RecurrentGemma, whose gates have num_attention_heads blocks)
    chunk_size: int = 64          # chunk length of the training scan (any length works: a speed/memory knob)
    activation: Activation = "gelu_tanh"  # of the gate branch y (Griffin / RecurrentGemma: GeLU, tanh approx.)

    def __post_init__(self) -> None:
        for name in ("lru_width", "n_heads"):
            value = getattr(self, name)
            if value is not None:
                check(value >= 1, f"rglru.{name}", f"must be an integer >= 1 or null, got {value}")
        for name in ("conv1d_width", "chunk_size"):
            value = getattr(self, name)
            check(value >= 1, f"rglru.{name}", f"must be an integer >= 1, got {value}")


class RGLRUState(ConvScanState):
    """The decode state of one rglru layer: ``conv`` (b, lru_width, conv1d_width - 1) and ``h`` (b, lru_width)."""

    STATE = "h"
    h: torch.Tensor | None


# ---- the scan ------------------------------------------------------------------------------------


def _time_major(v: torch.Tensor, pad: int, fill: float) -> torch.Tensor:
    """(b, T, W) -> a fresh contiguous (T + pad, b, W) copy, ``fill`` appended (decay 1 / input 0: a padded step
    leaves the state as it was). Always a copy: the kernels work in place."""
    out = v.new_full((v.shape[1] + pad, v.shape[0], *v.shape[2:]), fill)
    out[: v.shape[1]] = v.transpose(0, 1)
    return out


class _LinearScan(torch.autograd.Function):
    """h_t = a_t h_{t-1} + b_t, chunked; the backward is the same recurrence run backwards in time:
    g_t = dL/dh_t + a_{t+1} g_{t+1}, dL/db_t = g_t, dL/da_t = g_t h_{t-1}, dL/dh0 = a_0 g_0."""

    @staticmethod
    def forward(ctx, a, b, h0, chunk_size):  # noqa: ANN001, ANN205
        ctx.set_materialize_grads(False)
        t = a.shape[1]
        length, _, pad = _chunking(t, chunk_size)
        a_t = _time_major(a, pad, 1.0)
        h = _scan_(a_t, _time_major(b, pad, 0.0), h0, length)  # (T', b, W), in place into the copy of b
        ctx.save_for_backward(a_t, h, h0)
        ctx.shape = (t, length)
        return h[:t].transpose(0, 1), h[t - 1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh, d_final):  # noqa: ANN001, ANN205
        a_t, h, h0 = ctx.saved_tensors
        t, length = ctx.shape
        g = torch.zeros_like(h)
        if dh is not None:
            g[:t] = dh.transpose(0, 1)
        if d_final is not None:
            g[t - 1] += d_final
        g = _scan_reverse_(a_t, g, None, length)  # dL/dh_t through every later step
        prev = torch.cat([(h0 if h0 is not None else torch.zeros_like(h[0]))[None], h[: t - 1]])
        d_a = (g[:t] * prev).transpose(0, 1)
        d_h0 = g[0] * a_t[0] if h0 is not None and ctx.needs_input_grad[2] else None
        return d_a, g[:t].transpose(0, 1), d_h0, None


def linear_scan(a: torch.Tensor, b: torch.Tensor, chunk_size: int,
                h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The diagonal linear recurrence h_t = a_t * h_{t-1} + b_t, chunked (not a loop over every step).

    a (decays in [0, 1]), b: (batch, T, W); h0: (batch, W) or None (zeros). Returns every h_t (batch, T, W) and
    the last one (batch, W)."""
    return _LinearScan.apply(a, b, h0, chunk_size)


def linear_step(h: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One step: h (batch, W) or None (zeros), a, b (batch, W) -> the new h."""
    return b if h is None else torch.addcmul(b, a, h.to(b.dtype))


class _SqrtBoundDerivative(torch.autograd.Function):
    """sqrt(x) with its derivative 1 / (2 sqrt(x)) clipped at MAX_SQRT_GRADIENT (Griffin / RecurrentGemma)."""

    @staticmethod
    def forward(ctx, x):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x)
        return torch.sqrt(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (x,) = ctx.saved_tensors
        return grad / torch.sqrt(torch.clamp(4.0 * x, min=1.0 / MAX_SQRT_GRADIENT**2))


# ---- the mixer -----------------------------------------------------------------------------------


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """fp32 for the recurrence (bf16/fp16 activations under autocast), fp64 in an fp64 model."""
    return torch.promote_types(x.dtype, torch.float32)


class RealGatedLRU(nn.Module):
    """The RG-LRU's parameters (Hugging Face ``RecurrentGemmaRglru`` names and layouts): block-diagonal gate
    weights (n_heads, block, block) applied as u @ W, their biases (n_heads, block), ``recurrent_param`` (width,)."""

    def __init__(self, width: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads, self.block = n_heads, width // n_heads
        self.recurrent_param = nn.Parameter(torch.empty(width))
        self.input_gate_weight = nn.Parameter(torch.empty(n_heads, self.block, self.block))
        self.input_gate_bias = nn.Parameter(torch.empty(n_heads, self.block))
        self.recurrent_gate_weight = nn.Parameter(torch.empty(n_heads, self.block, self.block))
        self.recurrent_gate_bias = nn.Parameter(torch.empty(n_heads, self.block))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = math.sqrt(W_INIT_VARIANCE_SCALE / self.block)
        for w in (self.input_gate_weight, self.recurrent_gate_weight):
            nn.init.normal_(w, std=std)
        nn.init.zeros_(self.input_gate_bias)
        nn.init.zeros_(self.recurrent_gate_bias)
        # RecurrentGemma's init: softplus(p) = -log(u) / 2 with u ~ U(0.9^2, 0.999^2), i.e. sigma(-p) = sqrt(u), the
        # paper's a = sigma(Lambda), uniform-ish in [0.9, 0.999].
        u = torch.empty_like(self.recurrent_param).uniform_(0.9**2 + 1e-8, 0.999**2 + 1e-8)
        self.recurrent_param.copy_(torch.log(torch.expm1(-0.5 * torch.log(u))))

    def gates(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u (b, T, width) in the compute dtype -> (input gate, log a), each (b, T, width)."""
        b, t, width = u.shape
        ct = u.dtype
        weight = torch.cat([self.input_gate_weight, self.recurrent_gate_weight], -1).to(ct)  # (H, k, 2k)
        bias = torch.cat([self.input_gate_bias, self.recurrent_gate_bias], -1).to(ct)  # (H, 2k)
        heads = u.reshape(b * t, self.n_heads, self.block).transpose(0, 1)  # (H, N, k)
        logits = torch.baddbmm(bias[:, None, :], heads, weight)  # (H, N, 2k)
        gate_i, gate_r = torch.sigmoid(logits).transpose(0, 1).reshape(b, t, self.n_heads, 2, self.block).unbind(3)
        log_a = -C * gate_r.reshape(b, t, width) * F.softplus(self.recurrent_param.to(ct))
        return gate_i.reshape(b, t, width), log_a


class GriffinRecurrentBlock(nn.Module):
    """Griffin's recurrent block (Hugging Face ``RecurrentGemmaRecurrentBlock`` layout and names)."""

    def __init__(self, d_model: int, opts: RGLRUConfig, n_heads: int, bias: bool) -> None:
        super().__init__()
        self.opts = opts
        width = opts.lru_width or d_model
        check(width % n_heads == 0, "rglru.n_heads",
              f"must divide lru_width = {width} (the gates' blocks), got {n_heads}"
              + ("" if opts.n_heads else " (null: the stack's n_heads)"))
        self.width, self.n_heads = width, n_heads
        self.linear_y = nn.Linear(d_model, width, bias=bias)
        self.linear_x = nn.Linear(d_model, width, bias=bias)
        self.conv_1d = nn.Conv1d(width, width, opts.conv1d_width, groups=width, bias=bias)
        self.rg_lru = RealGatedLRU(width, n_heads)
        self.linear_out = nn.Linear(width, d_model, bias=bias)
        self.act = activation_fn(opts.activation)
        self.init_weights(0.02, 0.02)

    def new_state(self) -> RGLRUState:
        return RGLRUState()

    @torch.no_grad()
    def init_weights(self, std: float, out_std: float) -> None:
        """The stack's normal(std) for linear_x / linear_y, out_std for linear_out (a residual output projection);
        Griffin's for the conv (variance 0.01 / width), the gates and recurrent_param; zero biases."""
        nn.init.normal_(self.linear_x.weight, std=std)
        nn.init.normal_(self.linear_y.weight, std=std)
        nn.init.normal_(self.linear_out.weight, std=out_std)
        nn.init.normal_(self.conv_1d.weight, std=math.sqrt(W_INIT_VARIANCE_SCALE / self.opts.conv1d_width))
        for layer in (self.linear_x, self.linear_y, self.linear_out, self.conv_1d):
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        self.rg_lru.reset_parameters()

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                state: RGLRUState | None = None) -> MixerResult:
        start = state is None or state.h is None  # a sequence start: h_{-1} = 0 and no sqrt(1 - a^2) at t = 0
        if start:
            check_right_padding(attention_mask)
        y = self.act(self.linear_y(x))
        u, window = causal_conv(self.linear_x(x), self.conv_1d.weight, self.conv_1d.bias,
                                state.conv if state is not None else None)
        if state is not None:
            state.conv = window
        ct = compute_dtype(u)
        with torch.autocast(x.device.type, enabled=False):
            u = u.to(ct)
            gate_i, log_a = self.rg_lru.gates(u)
            a = torch.exp(log_a)
            scale = _SqrtBoundDerivative.apply(-torch.expm1(2.0 * log_a))  # sqrt(1 - a^2), accurate near a = 1
            if start:
                scale = torch.cat([torch.ones_like(scale[:, :1]), scale[:, 1:]], 1)
            b = u * gate_i * scale
            h0 = None if start else state.h
            if x.shape[1] == 1 and state is not None:
                final = linear_step(h0, a[:, 0], b[:, 0])
                h = final[:, None]
            else:
                h, final = linear_scan(a, b, self.opts.chunk_size, h0)
            stats = self._stats(a, gate_i, final)
        if state is not None:
            state.h = final
        return MixerResult(self.linear_out(h.to(x.dtype) * y), None, stats)

    @torch.no_grad()
    def _stats(self, a: torch.Tensor, gate_i: torch.Tensor, h: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "decay": a.mean().float(), "long_memory": (a > LONG_MEMORY).float().mean(),
            "input_gate": gate_i.mean().float(), "state_norm": h.norm(dim=-1).mean().float(),
        }


def _build(ctx: LayerContext) -> GriffinRecurrentBlock:
    cfg, opts = ctx.config, ctx.options
    return GriffinRecurrentBlock(cfg.d_model, opts, opts.n_heads or cfg.n_heads, cfg.bias)


def rglru_metrics(cfg, layer_ids: list[int]) -> dict[str, Metric]:  # noqa: ANN001
    return {
        # Mean per-step decay a_t over channels and tokens (1 = keeps everything, 0 = forgets at once).
        "rglru/decay": LayerIdMean("rglru_decay", layer_ids),
        # Share of decays above 0.99: channels whose memory reaches beyond ~100 tokens.
        "rglru/long_memory": LayerIdMean("rglru_long_memory", layer_ids),
        # Mean input gate i_t: how much of each token enters the state.
        "rglru/input_gate": LayerIdMean("rglru_input_gate", layer_ids),
        # L2 norm of the recurrent state after the sequence (growth flags instability).
        "rglru/state_norm": LayerIdMean("rglru_state_norm", layer_ids),
    }


RGLRU = MixerSpec(
    name="rglru", role="token", family="rglru", options="rglru", causal=True, carries="recurrent",
    context_limited=False,
    description="Griffin's recurrent block (RG-LRU, De et al. 2024): gated linear recurrence + temporal conv, "
                "chunked scan in training, O(1) decode state",
    build=_build, metrics=rglru_metrics,
)
