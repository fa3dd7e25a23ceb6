"""The linear-attention token mixers: ``gated_deltanet`` (Gated DeltaNet, Yang et al. 2024; the linear layer of
Qwen3-Next) and ``linear_attention`` (plain, optionally with RetNet's fixed per-head decay), on one chunkwise kernel
(``linear_scan.py``).

gated_deltanet, as Hugging Face's ``Qwen3NextGatedDeltaNet`` computes it and with its parameter names:
``in_proj_qkvz`` gives queries, keys (n_k_heads x head_k_dim), values and the output gate z (n_heads x head_v_dim),
grouped per key head; ``in_proj_ba`` the write strength beta = sigmoid(b) and the decay input a per value head;
q, k, v pass a causal depthwise conv (``conv_size`` taps, SiLU); q and k are L2-normalised (q also scaled by
head_k_dim^-1/2); the decay is g = -exp(A_log) softplus(a + dt_bias) (Mamba-2's form); the delta rule runs per value
head (key heads shared by n_heads / n_k_heads value heads); each head's output is RMS-normalised and gated by SiLU(z);
``out_proj`` maps back. Generation carries the conv window and the (head_k_dim x head_v_dim) state per head: O(1).

linear_attention: q, k, v projections through the same short conv as gated_deltanet's (``conv_size`` 0: none),
L2-normalised q and k (q scaled), S_t = gamma_h S_{t-1} + k_t v_t^T with no decay (gamma = 1) or RetNet's
gamma_h = 1 - 2^(-5 - h), per-head RMSNorm of the output, ``o_proj``. With the conv it differs from gated_deltanet
only by what the delta rule and the gates add, which is what a comparison of the two measures.
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
from .linear_scan import chunked, step
from .recurrent import check_right_padding
from .spec import LayerContext, MixerResult, MixerSpec
from .ssm import LONG_MEMORY, compute_dtype
from .ssm_scan import causal_conv


@dataclass
class LinearAttentionConfig:
    n_heads: int | None = None    # value heads (each with its own state); null = the model's n_heads
    n_k_heads: int | None = None  # gated_deltanet: query/key heads, each shared by n_heads / n_k_heads value heads; null = n_heads
    head_k_dim: int | None = None  # query/key width per head; null = d_model / n_heads
    head_v_dim: int | None = None  # value width per head (the state is head_k_dim x head_v_dim); null = head_k_dim
    conv_size: int = 4            # taps of the causal depthwise conv (SiLU) on q, k, v; linear_attention: 0 = none
    chunk_size: int | None = None  # chunk length of the training form (any length works: a speed/memory knob);
    # null = head_k_dim within 32..64, the fastest measured on CPU (fwd+bwd at 4k-16k: 32 for heads of 32, 64 for 128)
    decay: Literal["none", "retention"] = "none"  # linear_attention: no decay, or RetNet's gamma_h = 1 - 2^(-5-h)

    def __post_init__(self) -> None:
        for name in ("n_heads", "n_k_heads", "head_k_dim", "head_v_dim"):
            value = getattr(self, name)
            check(value is None or (isinstance(value, int) and value >= 1), f"linear_attn.{name}",
                  f"must be null or an integer >= 1, got {value!r}")
        check(self.chunk_size is None or (isinstance(self.chunk_size, int) and self.chunk_size >= 1),
              "linear_attn.chunk_size", f"must be null or an integer >= 1, got {self.chunk_size!r}")
        check(isinstance(self.conv_size, int) and self.conv_size >= 0, "linear_attn.conv_size",
              f"must be an integer >= 0 (0: no conv, linear_attention only), got {self.conv_size!r}")

    def resolve(self, d_model: int, model_heads: int) -> tuple[int, int, int, int]:
        """(n_heads, n_k_heads, head_k_dim, head_v_dim) with the nulls filled in; checks they fit together."""
        heads = self.n_heads or model_heads
        k_heads = self.n_k_heads or heads
        check(heads % k_heads == 0, "linear_attn.n_k_heads",
              f"must divide the value heads ({heads}): each key head serves a whole group, got {k_heads}")
        dk = self.head_k_dim or d_model // heads
        check(dk >= 1, "linear_attn.head_k_dim", f"d_model / n_heads is 0 ({d_model} / {heads}): set it")
        return heads, k_heads, dk, self.head_v_dim or dk

    def chunk(self, head_k_dim: int) -> int:
        """The training form's chunk length: the set one, or head_k_dim within 32..64."""
        return self.chunk_size or min(64, max(32, head_k_dim))


class LinearState(ConvScanState):
    """The decode state of one linear-attention layer: ``conv`` (b, channels, conv_size - 1) or None, and ``s``
    (b, heads, head_k_dim, head_v_dim)."""

    STATE = "s"
    s: torch.Tensor | None


def _l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def _run(q, k, v, log_decay, beta, chunk_size: int, state: LinearState | None):  # noqa: ANN001, ANN202
    """(B, T, H, D) inputs -> (B, T, H, Dv) outputs through the kernel; one position with a state: the recurrence."""
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # (B, H, T, D)
    log_decay = None if log_decay is None else log_decay.transpose(1, 2)
    beta = None if beta is None else beta.transpose(1, 2)
    s0 = state.s if state is not None else None
    if q.shape[2] == 1 and state is not None:
        o, s = step(q[:, :, 0], k[:, :, 0], v[:, :, 0], None if log_decay is None else log_decay[:, :, 0],
                    None if beta is None else beta[:, :, 0], s0)
        o = o[:, :, None]
    else:
        o, s = chunked(q, k, v, log_decay, beta, chunk_size, s0)
    if state is not None:
        state.s = s
    return o.transpose(1, 2), s


def _stats(log_decay: torch.Tensor | None, beta: torch.Tensor | None, s: torch.Tensor,
           record: bool) -> dict[str, torch.Tensor]:
    stats = {"state_norm": s.detach().flatten(1).norm(dim=1).mean().float()}
    if beta is not None:
        stats["beta"] = beta.detach().mean().float()
    if record and log_decay is not None:
        decay = log_decay.detach().exp()
        stats.update(decay=decay.mean().float(), long_memory=(decay > LONG_MEMORY).float().mean())
    return stats


class NormThenGate(nn.Module):
    """RMSNorm over each head's output, then times SiLU(z), in fp32 (Qwen3-Next's ``Qwen3NextRMSNormGated``; Mamba-2
    gates before its norm: ``ssm.GatedRMSNorm``)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, o: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.to(o.dtype)
        return o * F.silu(z.to(o.dtype))


class GatedDeltaNet(nn.Module):
    record_stats = False  # decay statistics on validation batches only (as for attention entropy)

    def __init__(self, d_model: int, opts: LinearAttentionConfig, model_heads: int, norm_eps: float) -> None:
        super().__init__()
        self.opts = opts
        self.n_heads, self.n_k_heads, self.head_k_dim, self.head_v_dim = opts.resolve(d_model, model_heads)
        self.key_dim, self.value_dim = self.n_k_heads * self.head_k_dim, self.n_heads * self.head_v_dim
        self.conv_dim = 2 * self.key_dim + self.value_dim
        self.in_proj_qkvz = nn.Linear(d_model, 2 * self.key_dim + 2 * self.value_dim, bias=False)
        self.in_proj_ba = nn.Linear(d_model, 2 * self.n_heads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, opts.conv_size, groups=self.conv_dim, bias=False)
        self.dt_bias = nn.Parameter(torch.ones(self.n_heads))
        self.A_log = nn.Parameter(torch.empty(self.n_heads))
        self.norm = NormThenGate(self.head_v_dim, norm_eps)
        self.out_proj = nn.Linear(self.value_dim, d_model, bias=False)
        for p in (self.dt_bias, self.A_log):
            p._no_weight_decay = True
        self.init_weights(0.02, 0.02)

    @torch.no_grad()
    def init_weights(self, std: float, out_std: float) -> None:
        # Mamba-2's / FLA's init: A in [1, 16], step sizes dt = softplus(dt_bias) log-uniform in [0.001, 0.1], so
        # the decays exp(-A dt) start mostly near 1 (long memory). (Hugging Face's init, dt_bias = 1, starts every
        # head at decays of e^-1.3 or less per step: measured here, that model did not learn MQAR in 800 steps.)
        self.A_log.copy_(torch.empty(self.n_heads).uniform_(1.0, 16.0).log())
        dt = torch.exp(torch.rand(self.n_heads) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)).clamp(min=1e-4)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.norm.weight.fill_(1.0)
        nn.init.normal_(self.out_proj.weight, std=out_std)

    def new_state(self) -> LinearState:
        return LinearState()

    def _split(self, qkvz: torch.Tensor, ba: torch.Tensor):  # noqa: ANN202
        """Hugging Face's layout: per key head [q, k, v group, z group] and [b group, a group]."""
        b, t, _ = qkvz.shape
        r = self.n_heads // self.n_k_heads
        q, k, v, z = qkvz.view(b, t, self.n_k_heads, -1).split(
            [self.head_k_dim, self.head_k_dim, r * self.head_v_dim, r * self.head_v_dim], dim=-1)
        beta_in, a = ba.view(b, t, self.n_k_heads, 2 * r).split([r, r], dim=-1)
        return (q.reshape(b, t, -1), k.reshape(b, t, -1), v.reshape(b, t, -1),
                z.reshape(b, t, self.n_heads, self.head_v_dim), beta_in.reshape(b, t, -1), a.reshape(b, t, -1))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                state: LinearState | None = None) -> MixerResult:
        if state is None or state.s is None:
            check_right_padding(attention_mask)
        b, t, _ = x.shape
        q, k, v, z, beta_in, a = self._split(self.in_proj_qkvz(x), self.in_proj_ba(x))
        qkv, window = causal_conv(torch.cat([q, k, v], dim=-1), self.conv1d.weight, None,
                                  state.conv if state is not None else None)
        if state is not None:
            state.conv = window
        q, k, v = F.silu(qkv).split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        ct = compute_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            r = self.n_heads // self.n_k_heads
            q = _l2norm(q.to(ct).view(b, t, self.n_k_heads, -1)) * self.head_k_dim ** -0.5
            k = _l2norm(k.to(ct).view(b, t, self.n_k_heads, -1))
            q, k = q.repeat_interleave(r, dim=2), k.repeat_interleave(r, dim=2)  # (B, T, H, Dk)
            v = v.to(ct).view(b, t, self.n_heads, self.head_v_dim)
            beta = torch.sigmoid(beta_in.to(ct))  # (B, T, H)
            log_decay = -self.A_log.to(ct).exp() * F.softplus(a.to(ct) + self.dt_bias.to(ct))
            o, s = _run(q, k, v, log_decay, beta, self.opts.chunk(self.head_k_dim), state)
            o = self.norm(o, z)
            stats = _stats(log_decay, beta, s, self.record_stats)
        return MixerResult(self.out_proj(o.reshape(b, t, self.value_dim).to(x.dtype)), None, stats)


class LinearAttention(nn.Module):
    record_stats = False

    def __init__(self, d_model: int, opts: LinearAttentionConfig, model_heads: int, norm_eps: float,
                 bias: bool) -> None:
        super().__init__()
        self.opts = opts
        self.n_heads, _, self.head_k_dim, self.head_v_dim = opts.resolve(d_model, model_heads)
        h = self.n_heads
        self.q_proj = nn.Linear(d_model, h * self.head_k_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, h * self.head_k_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, h * self.head_v_dim, bias=bias)
        channels = h * (2 * self.head_k_dim + self.head_v_dim)
        self.conv1d = (nn.Conv1d(channels, channels, opts.conv_size, groups=channels, bias=False)
                       if opts.conv_size else None)
        self.norm = nn.RMSNorm(self.head_v_dim, eps=norm_eps)
        self.o_proj = nn.Linear(h * self.head_v_dim, d_model, bias=bias)
        gamma = 1 - 2.0 ** (-5.0 - torch.arange(h, dtype=torch.float64))  # RetNet's per-head decays
        self.register_buffer("log_gamma", gamma.log().float(), persistent=False)

    @torch.no_grad()
    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.o_proj.weight, std=out_std)

    def new_state(self) -> LinearState:
        return LinearState()

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                state: LinearState | None = None) -> MixerResult:
        if state is None or state.s is None:
            check_right_padding(attention_mask)
        b, t, _ = x.shape
        h = self.n_heads
        ct = compute_dtype(x)
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.conv1d is not None:
            qkv, window = causal_conv(torch.cat([q, k, v], dim=-1), self.conv1d.weight, None,
                                      state.conv if state is not None else None)
            if state is not None:
                state.conv = window
            q, k, v = F.silu(qkv).split([q.shape[-1], k.shape[-1], v.shape[-1]], dim=-1)
        with torch.autocast(x.device.type, enabled=False):
            q = _l2norm(q.to(ct).view(b, t, h, -1)) * self.head_k_dim ** -0.5
            k = _l2norm(k.to(ct).view(b, t, h, -1))
            v = v.to(ct).view(b, t, h, self.head_v_dim)
            log_decay = None
            if self.opts.decay == "retention":
                log_decay = self.log_gamma.to(ct).expand(b, t, h)
            o, s = _run(q, k, v, log_decay, None, self.opts.chunk(self.head_k_dim), state)
            o = self.norm(o).reshape(b, t, h * self.head_v_dim)
            stats = _stats(log_decay, None, s, self.record_stats)
        return MixerResult(self.o_proj(o.to(x.dtype)), None, stats)


def linear_metrics(cfg, layer_ids: list[int]) -> dict[str, Metric]:  # noqa: ANN001
    metrics = {
        # L2 norm of each layer's state after the sequence (growth flags instability).
        "linear/state_norm": LayerIdMean("linear_state_norm", layer_ids),
        # Mean per-step decay exp(g) (1 = keeps everything) and the share above 0.99 (memory beyond ~100 tokens).
        "linear/decay": LayerIdMean("linear_decay", layer_ids),
        "linear/long_memory": LayerIdMean("linear_long_memory", layer_ids),
    }
    if any(s.name == "gated_deltanet" for s in cfg.token_mixers):
        # Mean write strength beta of the delta rule (0 = no write, 1 = overwrite the key's value).
        metrics["linear/beta"] = LayerIdMean("linear_beta", layer_ids)
    return metrics


def _build_gdn(ctx: LayerContext) -> GatedDeltaNet:
    return GatedDeltaNet(ctx.config.d_model, ctx.options, ctx.config.n_heads, ctx.config.norm_eps)


def _build_linear(ctx: LayerContext) -> LinearAttention:
    cfg = ctx.config
    return LinearAttention(cfg.d_model, ctx.options, cfg.n_heads, cfg.norm_eps, cfg.bias)


GATED_DELTANET = MixerSpec(
    name="gated_deltanet", role="token", family="linear", options="linear_attn", carries="recurrent",
    description="Gated DeltaNet (Yang et al. 2024, Qwen3-Next): gated delta rule, chunkwise training, O(1) decode",
    build=_build_gdn, metrics=linear_metrics,
)
LINEAR_ATTENTION = MixerSpec(
    name="linear_attention", role="token", family="linear", options="linear_attn", carries="recurrent",
    description="linear attention (no decay, or RetNet's fixed per-head decay): chunkwise training, O(1) decode",
    build=_build_linear, metrics=linear_metrics,
)
