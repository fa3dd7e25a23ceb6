"""Eager vs ``torch.compile``'d decode step of the decoder stack (d256 L4, batch 1, prompt 128, 128 greedy tokens,
one thread), interleaved round by round; also prints whether the compiled step is one graph (no graph breaks).

    python experiments/quantization/compile_probe.py gpt default,maxauto     # modes: default, cpp, maxauto, static
"""
from __future__ import annotations

import copy
import statistics
import sys
import time

import torch
import torch._dynamo

from plugins.decoder.bench.decoder import BenchConfig, Size, build_gpt, build_llama

MODES = {  # name -> torch.compile keyword arguments for the decode step
    "default": dict(dynamic=True),
    "cpp": dict(dynamic=True, options={"cpp_wrapper": True}),
    "maxauto": dict(dynamic=True, mode="max-autotune-no-cudagraphs"),
    "static": dict(dynamic=False),
}


def main(name: str, modes: list[str], rounds: int = 9, new_tokens: int = 129) -> None:
    torch.set_num_threads(1)
    size = Size(256, 4, 8)
    torch.manual_seed(0)
    base = (build_gpt if name == "gpt" else build_llama)(size, BenchConfig(sizes=[size], seq=300, vocab=256)).eval()
    ids = torch.randint(0, 256, (1, 128))
    with torch.inference_mode():  # one graph for the whole step?
        state = base.new_state()
        state.reserve(300)
        base(ids, state=state)
        x = base.tok_emb(ids[:, -1:])
        explained = torch._dynamo.explain(base._decode_step)(x, None, state, 1)
    print(f"{name}: compiled step = {explained.graph_count} graph(s), {explained.graph_break_count} break(s)")
    variants = {"eager": copy.deepcopy(base)}
    for mode in modes:
        model = copy.deepcopy(base)
        model._compiled_decode = torch.compile(model._decode_step, **MODES[mode])
        variants[mode] = model
    reference = base.generate(ids, new_tokens, temperature=0)
    for mode, model in variants.items():  # warm-up (compiles) and the same greedy tokens
        assert torch.equal(model.generate(ids, new_tokens, temperature=0, compile=mode != "eager"), reference), mode
    ms: dict[str, list[float]] = {mode: [] for mode in variants}
    for _ in range(rounds):
        for mode, model in variants.items():
            t0 = time.perf_counter()
            model.generate(ids, 1, temperature=0, compile=mode != "eager")
            t1 = time.perf_counter()
            model.generate(ids, new_tokens, temperature=0, compile=mode != "eager")
            t2 = time.perf_counter()
            ms[mode].append(((t2 - t1) - (t1 - t0)) / (new_tokens - 1) * 1e3)
    for mode, values in ms.items():
        ratios = sorted(e / v for e, v in zip(ms["eager"], values))  # paired by round
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        print(f"{mode:8s} {statistics.median(values):6.3f} ms/token   vs eager {statistics.median(ratios):.2f}x "
              f"(IQR {q[0]:.2f}-{q[2]:.2f})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "gpt", sys.argv[2].split(",") if len(sys.argv) > 2 else ["default"])
