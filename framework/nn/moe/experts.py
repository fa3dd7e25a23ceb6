"""The routed experts of an MoE layer as stacked weights, run with one grouped matmul per projection.

``GroupedExperts(x, counts)`` takes the assignments already sorted by expert (expert 0's rows, then
expert 1's, ...) and applies expert i's FFN to its ``counts[i]`` rows. ``torch.nn.functional.grouped_mm``
does each projection for all experts in one call: one kernel per projection instead of one per expert,
which keeps the small per-expert matmuls efficient (``archlab bench moe``). Where grouped_mm does not run
(CUDA before Hopper, float32 on CUDA, widths whose rows are not 16-byte aligned) a loop over experts
computes the same thing; its cost does not grow with the number of tokens either. In bf16/fp16 on CPU
each expert's rows are padded with zero rows to a multiple of 64 (dropped afterwards): oneDNN builds a GEMM
kernel for every new shape, and per-expert row counts change every step.

Weights use ``nn.Linear``'s (out, in) layout per expert, with the dense FFN's names: ``gate_proj``
(SwiGLU only), ``up_proj``, ``down_proj``, each (E, out, in). Gate and up stay separate tensors: one fused
(E, 2 * d_ff, d) projection measured slower on CPU (its halves are strided views, and their gradients
need a concatenation).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..dense_weight import dense
from ..feedforward import MLP, GatedMLP

ExpertActivation = Literal["swiglu", "gelu"]


HALF_CPU_ROW_BUCKET = 64  # bf16/fp16 on CPU: expert groups padded to a multiple of this many rows


def _pad_groups(x: torch.Tensor, counts: torch.Tensor, bucket: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows grouped by expert (M, C) -> (x padded with zero rows so every group has a multiple of ``bucket``
    rows, the padded counts (E,), and where each original row sits in the padded tensor (M,))."""
    padded = (counts + bucket - 1) // bucket * bucket
    expert_of_row = torch.repeat_interleave(torch.arange(len(counts), device=x.device), counts, output_size=x.shape[0])
    shift = (padded.cumsum(0) - padded) - (counts.cumsum(0) - counts)  # (E,) group start, padded minus original
    rows = torch.arange(x.shape[0], device=x.device) + shift[expert_of_row]
    out = x.new_zeros(int(padded.sum()), x.shape[1]).index_copy(0, rows, x)
    return out, padded, rows


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """grouped_mm is not on autocast's list: cast its operands by hand when autocast is on."""
    kind = device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None


class GroupedExperts(nn.Module):
    """``n_experts`` FFNs (SwiGLU or GELU MLP) of hidden width ``d_ff``, applied to rows grouped by expert."""

    def __init__(self, n_experts: int, d_model: int, d_ff: int, activation: ExpertActivation = "swiglu",
                 bias: bool = False, impl: Literal["auto", "grouped_mm", "loop"] = "auto") -> None:
        super().__init__()
        if activation not in ("swiglu", "gelu"):
            raise ValueError(f"moe.activation: {activation!r} is not one of 'swiglu', 'gelu'")
        self.n_experts, self.d_model, self.d_ff = n_experts, d_model, d_ff
        self.gated = activation == "swiglu"
        self.impl = impl
        self.pad_rows_to: int | None = None  # grouped path: round each expert's rows up to this (None: auto)
        # Quantization-aware training (framework/quantization) sets a fake quantizer applied to every weight:
        # GroupedExperts holds stacked tensors, which torchao's swap of nn.Linear modules does not reach.
        self.weight_quantizer: nn.Module | None = None

        def weight(rows: int, cols: int) -> nn.Parameter:
            return nn.Parameter(torch.empty(n_experts, rows, cols))

        def bias_of(rows: int) -> nn.Parameter | None:
            return nn.Parameter(torch.empty(n_experts, rows)) if bias else None

        self.gate_proj = weight(d_ff, d_model) if self.gated else None
        self.up_proj = weight(d_ff, d_model)
        self.down_proj = weight(d_model, d_ff)
        self.gate_bias = bias_of(d_ff) if self.gated else None
        self.up_bias = bias_of(d_ff)
        self.down_bias = bias_of(d_model)
        self.reset_parameters()

    def projections(self) -> list[tuple[nn.Parameter, nn.Parameter | None]]:
        """(weight, bias) of each projection: [gate,] up, down."""
        pairs = [(self.up_proj, self.up_bias), (self.down_proj, self.down_bias)]
        return ([(self.gate_proj, self.gate_bias)] if self.gate_proj is not None else []) + pairs

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """nn.Linear's default init, expert by expert: uniform(+-1/sqrt(fan_in))."""
        for weight, bias_ in self.projections():
            bound = 1.0 / math.sqrt(weight.shape[-1])
            nn.init.uniform_(weight, -bound, bound)
            if bias_ is not None:
                nn.init.uniform_(bias_, -bound, bound)

    def weights(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(weight, bias) of each projection as the forward uses them: quantized weights dequantized, and
        fake-quantized under quantization-aware training."""
        out = []
        for weight, bias_ in self.projections():
            weight = dense(weight)
            if self.weight_quantizer is not None:
                weight = self.weight_quantizer(weight.reshape(-1, weight.shape[-1])).view(weight.shape)
            out.append((weight, bias_))
        return out

    def __len__(self) -> int:
        return self.n_experts

    def params_per_expert(self) -> int:
        return sum(p[0].numel() for p in self.parameters())

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """x: (M, C) rows grouped by expert; counts: (E,) rows per expert (sum M) -> (M, C)."""
        if x.shape[0] == 0:
            return x
        if self._use_grouped_mm(x):
            return self._grouped(x, counts)
        return self._loop(x, counts)

    def _use_grouped_mm(self, x: torch.Tensor) -> bool:
        if self.impl != "auto":
            return self.impl == "grouped_mm"
        dtype = _autocast_dtype(x.device) or x.dtype
        if x.device.type == "cuda":  # the CUDA kernels are bf16 on Hopper and later
            return dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (9, 0)
        if x.device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16):
            return False
        width = dtype.itemsize
        return all(n * width % 16 == 0 for n in (self.d_model, self.d_ff))  # the kernel's row alignment

    def _row_bucket(self, x: torch.Tensor) -> int:
        if self.pad_rows_to is not None:
            return self.pad_rows_to
        # CPU half-precision GEMMs (oneDNN) build a kernel per new shape: with per-expert row counts that
        # change every step, that is ~3x the GEMM time. Rounding each group up to 64 rows makes shapes repeat.
        return HALF_CPU_ROW_BUCKET if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) else 1

    def _grouped(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        dtype = _autocast_dtype(x.device)
        if dtype is not None:
            x = x.to(dtype)
        bucket = self._row_bucket(x)
        if bucket > 1:
            x, counts, rows = _pad_groups(x, counts, bucket)
            return self._grouped_rows(x, counts).index_select(0, rows)
        return self._grouped_rows(x, counts)

    def _grouped_rows(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        offs = counts.cumsum(0).to(torch.int32)
        expert_of_row = None
        if self.up_bias is not None:  # per-expert biases, gathered per row
            expert_of_row = torch.repeat_interleave(torch.arange(self.n_experts, device=x.device), counts,
                                                    output_size=x.shape[0])

        def project(h: torch.Tensor, weight: torch.Tensor, bias_: torch.Tensor | None) -> torch.Tensor:
            out = F.grouped_mm(h, weight.to(h.dtype).transpose(1, 2), offs=offs)
            return out if bias_ is None else out + bias_[expert_of_row].to(out.dtype)

        *gate, up, down = self.weights()
        up = project(x, *up)
        hidden = F.silu(project(x, *gate[0])) * up if self.gated else F.gelu(up)
        out = project(hidden, *down)
        if out.requires_grad:  # grouped_mm's backward rejects broadcast gradients (e.g. from out.sum())
            out.register_hook(torch.Tensor.contiguous)
        return out

    def _loop(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        chunks = x.split(counts.tolist())
        weights = self.weights()  # dequantized once, not once per expert
        return torch.cat([self.run_expert(i, chunk, weights) for i, chunk in enumerate(chunks)])

    # ---- one expert -------------------------------------------------------------------------
    def run_expert(self, i: int, x: torch.Tensor,
                   weights: list[tuple[torch.Tensor, torch.Tensor | None]] | None = None) -> torch.Tensor:
        """Expert i's FFN on x (..., C): the reference the grouped path must equal."""
        def project(h: torch.Tensor, weight: torch.Tensor, bias_: torch.Tensor | None) -> torch.Tensor:
            return F.linear(h, weight[i], None if bias_ is None else bias_[i])

        *gate, up, down = weights if weights is not None else self.weights()
        up = project(x, *up)
        hidden = F.silu(project(x, *gate[0])) * up if self.gated else F.gelu(up)
        return project(hidden, *down)

    @torch.no_grad()
    def load_dense_(self, i: int, ffn: MLP | GatedMLP) -> None:
        """Copy a dense FFN of the same shape into expert i (sparse upcycling starts from copies of one FFN)."""
        if isinstance(ffn, GatedMLP) != self.gated:
            raise ValueError(f"expert {i}: a {'SwiGLU' if self.gated else 'GELU'} expert cannot take a "
                             f"{type(ffn).__name__}'s weights")
        if (self.up_bias is None) != (ffn.up_proj.bias is None):
            raise ValueError(f"expert {i}: bias={self.up_bias is not None} here, the dense FFN has the opposite")
        layers = [ffn.gate_proj] if self.gated else []
        for (weight, bias_), layer in zip(self.projections(), [*layers, ffn.up_proj, ffn.down_proj]):
            weight[i].copy_(layer.weight)
            if bias_ is not None:
                bias_[i].copy_(layer.bias)
