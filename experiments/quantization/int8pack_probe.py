"""Probe: int8 weight-only decoding through PyTorch's ``_weight_int8pack_mm`` (bf16 activations) instead of
torchao 0.18's CPU ``Int8Tensor`` path, on llama d1024 L8 at batch 1 (one thread). Not wired into archlab yet.

    python experiments/quantization/int8pack_probe.py
"""
from __future__ import annotations

import copy
import time

import torch
from torch import nn

from plugins.decoder.bench.decoder import Size
from plugins.decoder.bench.infer import InferConfig, _pair


class Int8PackLinear(nn.Module):
    """Symmetric int8 per output row; the matmul in bf16 on the int8 weight (the kernel's fast path)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach()
        scale = w.abs().amax(1).clamp(min=1e-8) / 127
        self.register_buffer("qweight", torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8))
        self.register_buffer("scales", scale.bfloat16())
        self.bias = linear.bias
        self.weight = linear.weight  # the model reads .weight.device in its statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, x.shape[-1]).bfloat16(), self.qweight, self.scales)
        y = y.view(*x.shape[:-1], -1).to(x.dtype)
        return y if self.bias is None else y + self.bias


def decode_seconds(model: nn.Module, ids: torch.Tensor, n: int = 16) -> float:
    model.generate(ids, 2, temperature=0)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        model.generate(ids, 1, temperature=0)
        one = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(ids, n + 1, temperature=0)
        best = min(best, (time.perf_counter() - start - one) / n)
    return best


def main() -> None:
    torch.set_num_threads(1)
    ours, _ = _pair("llama", Size(1024, 8, 16), InferConfig(prompt=64, new_tokens=17))
    packed = copy.deepcopy(ours)
    for name, module in list(packed.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name != "lm_head":
                setattr(module, child_name, Int8PackLinear(child))
    ids = torch.randint(0, 256, (1, 64), generator=torch.Generator().manual_seed(0))
    same = torch.equal(ours.generate(ids, 16, temperature=0), packed.generate(ids, 16, temperature=0))
    fp32, int8 = decode_seconds(ours), decode_seconds(packed)
    print(f"fp32 {1 / fp32:.1f} tok/s, int8pack (bf16 activations) {1 / int8:.1f} tok/s: {fp32 / int8:.2f}x; "
          f"same 16 greedy tokens: {same}")


if __name__ == "__main__":
    main()
