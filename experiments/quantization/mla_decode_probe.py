"""Quantized MLA decode (absorbed form, int4 packed): the key/value up-projection kv_b_proj dequantized at every
token (``--every-token``, the behaviour before 2026-12-06) vs once per generation (MLACache.dense_kv_b), interleaved
round by round on one thread; prints both tokens/s and the paired ratio's median and IQR.

    python experiments/quantization/mla_decode_probe.py --d-model 512 --heads 8 --rank 256

Reading a packed int4 weight back costs one (r x r) by (r x H (nope + dv)) matmul (torchao's Int4OpaqueTensor has
no dequantize: framework/nn/dense_weight.py), which grows as rank^2 and dwarfs the step at DeepSeek's ranks.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import framework
import framework.mixers.mla as mla
from framework.quantization.apply import quantize_model
from framework.quantization.config import QuantizationConfig


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--rank", type=int, default=256, help="kv_lora_rank, the cached latent's width")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = framework.build_model("decoder", mixer="mla", ffn="swiglu", norm="rmsnorm", bias=False, position="rope",
                                  vocab_size=256, d_model=a.d_model, n_heads=a.heads, n_layers=a.layers,
                                  max_seq_len=512, mla={"kv_lora_rank": a.rank, "qk_rope_head_dim": 16}).eval()
    quantize_model(model, QuantizationConfig(method="int4_weight_only", int4_format="packed"))
    assert type(model.blocks[0].mixer.kv_b_proj.weight).__name__ == "Int4OpaqueTensor"
    once = mla.MLACache.dense_kv_b
    forms = {"every token": lambda self, weight: mla.dense(weight), "once per generation": once}
    prompt = torch.randint(0, 256, (1, 32), generator=torch.Generator().manual_seed(0))

    def tokens_per_s() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(prompt, a.tokens, temperature=0.0)
        return a.tokens / (time.perf_counter() - start)

    rates: dict[str, list[float]] = {name: [] for name in forms}
    for r in range(a.rounds + 1):  # round 0 warms up
        for name, form in forms.items():
            mla.MLACache.dense_kv_b = form
            rate = tokens_per_s()
            if r:
                rates[name].append(rate)
    mla.MLACache.dense_kv_b = once
    ratios = [n / o for n, o in zip(rates["once per generation"], rates["every token"])]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    print(f"MLA d{a.d_model} H{a.heads} rank {a.rank} L{a.layers}, int4 packed, {a.tokens} greedy tokens, 1 thread")
    for name, values in rates.items():
        print(f"  {name:>20}: {statistics.median(values):8.1f} tok/s")
    print(f"  once / every token: {statistics.median(ratios):.2f}x (IQR {q1:.2f}-{q3:.2f}, {a.rounds} rounds)")


if __name__ == "__main__":
    main()
