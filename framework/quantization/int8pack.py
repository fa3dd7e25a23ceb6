"""``int8_weight_only`` through PyTorch's own CPU kernel, ``torch.ops.aten._weight_int8pack_mm``.

torchao 0.18's int8 weight-only linear on CPU runs slower than the fp32 GEMV it replaces (1024 x 4096 weight,
batch 1, one thread: 4.07 ms vs 1.66 ms), so decoding gets slower, not faster. PyTorch's int8-pack kernel with bf16
activations reads the int8 weight directly: 0.6-1.0 ms on the same weight, 1.33x fp32 decode end to end at llama d1024
L8 (experiments/quantization). The matmul takes bf16 activations (cast in and out), so its outputs carry bf16 rounding
besides the int8 weights'. Off the CPU the module dequantizes and calls ``F.linear``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Int8PackedLinear(nn.Module):
    """A Linear with symmetric int8 weights, one bf16 scale per output row (``qweight`` (out, in), ``scales`` (out,))."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(out_features, dtype=torch.bfloat16))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear) -> "Int8PackedLinear":
        out = cls(linear.in_features, linear.out_features, linear.bias is not None).to(linear.weight.device)
        w = linear.weight.detach().float()
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).bfloat16()  # rounded first: the kernel's scale
        out.qweight.copy_(torch.round(w / scales.float()[:, None]).clamp(-128, 127).to(torch.int8))
        out.scales.copy_(scales)
        if linear.bias is not None:
            out.bias.data = linear.bias.detach().clone()
        return out

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized (out, in) weight, float32 (for code that reads a Linear's weight: devices, reshapes)."""
        return self.qweight.float() * self.scales.float()[:, None]

    def dequantize(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            # the kernel reads rows at a stride of in_features: a strided view (a split's part) would crash it
            rows = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
            y = torch.ops.aten._weight_int8pack_mm(rows, self.qweight, self.scales)
            y = y.view(*x.shape[:-1], self.out_features).to(x.dtype)
        else:
            y = F.linear(x, self.weight.to(x.dtype))
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"
