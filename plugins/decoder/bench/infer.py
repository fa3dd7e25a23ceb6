"""``archlab bench infer``: greedy generation of the decoder plugin's GPT-2 and Llama settings against Hugging Face
``generate`` with the same weights (converted by ``plugins/decoder/hf_convert.py``), in fp32, bf16 and each
post-training quantization method (ours; Hugging Face runs the float model of the same dtype).

Per row: prefill tokens/s (the prompt as one forward), decode tokens/s (each further token against the caches),
the ratio to Hugging Face paired by round, the bytes of weights a decode step reads, and the share of the
memory-bandwidth bound those bytes set (bytes / bandwidth of a large tensor copy measured in the same run).

Timing: ``generate(prompt, 1)`` is the prefill (plus one sampled token); ``generate(prompt, N) -
generate(prompt, 1)`` is N - 1 decode steps. Both sides, every variant, interleaved round by round.

    archlab bench infer                                   # d256 L4 and d1024 L8, batch 1 and 8, prompt 128, 256 new
    archlab bench infer --sizes 256x4x8 --batches 1 --precisions fp32,int8_weight_only --rounds 3 --threads 1
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from framework.bench.common import (Column, Timing, describe_device, format_table, paired, setup_device,
                                    synchronize, time_interleaved)

from framework.quantization.int8pack import Int8PackedLinear

from .decoder import BenchConfig as TrainBenchConfig
from .decoder import Size, build_hf_gpt, build_hf_llama, build_gpt, build_llama

FLOATS = {"fp32": torch.float32, "bf16": torch.bfloat16}
QUANTIZED = {  # --precisions name -> quantization config (framework/quantization)
    "int8_weight_only": dict(method="int8_weight_only"),
    "int8pack": dict(method="int8_weight_only", int8_kernel="int8pack"),
    "int8_dynamic": dict(method="int8_dynamic"),
    "int4_weight_only": dict(method="int4_weight_only"),
}
TARGETS = {  # (model size label prefix, what) -> ratio; printed against the measured rows
    "decode vs HF at d256 L4, batch 1, fp32": 2.0,
    "decode vs HF at d1024 L8, batch 1, fp32": 1.2,
    "decode share of the bandwidth bound at d1024 L8, batch 1, fp32": 0.7,
    "int8 weight-only (int8_weight_only or int8pack) decode vs our fp32 at d1024 L8, batch 1": 1.3,
    "fp32+compile decode vs our fp32 (eager) at d256 L4": 1.3,
}


@dataclass
class InferConfig:
    sizes: list[Size] = field(default_factory=lambda: [Size(256, 4, 8), Size(1024, 8, 16)])
    models: tuple[str, ...] = ("gpt", "llama")
    batches: tuple[int, ...] = (1, 8)
    precisions: tuple[str, ...] = ("fp32", "bf16", *QUANTIZED)
    prompt: int = 128
    new_tokens: int = 256
    vocab: int = 256
    rounds: int = 3
    hf: bool = True
    compile: bool = False  # also our fp32 with a torch.compile'd decode step ("fp32+compile")
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        for p in self.precisions:
            if p not in FLOATS and p not in QUANTIZED:
                raise ValueError(f"--precisions: {p!r} is not one of {', '.join([*FLOATS, *QUANTIZED])}")
        for m in self.models:
            if m not in ("gpt", "llama"):
                raise ValueError(f"--models: {m!r} is not one of gpt, llama")
        if self.new_tokens < 2 or self.prompt < 1 or self.rounds < 1:
            raise ValueError("--new-tokens must be >= 2, --prompt and --rounds >= 1")


def _pair(name: str, size: Size, cfg: InferConfig) -> tuple[nn.Module, nn.Module]:
    """(ours, Hugging Face) with the same random weights, in eval mode."""
    from plugins.decoder.hf_gpt2 import from_gpt2
    from plugins.decoder.hf_llama import from_llama

    train_cfg = TrainBenchConfig(sizes=[size], seq=cfg.prompt + cfg.new_tokens, vocab=cfg.vocab)
    torch.manual_seed(0)
    hf = (build_hf_gpt if name == "gpt" else build_hf_llama)(size, train_cfg)
    hf.config.use_cache = True
    ours = (build_gpt if name == "gpt" else build_llama)(size, train_cfg)
    convert = from_gpt2 if name == "gpt" else from_llama
    ours.load_state_dict(convert(hf.state_dict(), size.n_layers), strict=True)
    return ours.eval(), hf.eval()


def weight_bytes_per_step(model: nn.Module) -> int:
    """Bytes of the weights one decode step reads: every matmul weight (the head included; an embedding reads
    one row, not counted) and every norm."""
    from framework.quantization.torchao_backend import storage_bytes

    seen: set[int] = set()
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            continue
        tensors = list(module.parameters(recurse=False))
        if isinstance(module, Int8PackedLinear):  # its int8 weight and scales are buffers
            tensors += [module.qweight, module.scales]
        for param in tensors:
            if id(param) not in seen:
                seen.add(id(param))
                total += storage_bytes(param)
    return total


def matmuls_of_a_step(model: nn.Module, batch: int, steps: int) -> Callable[[], None]:
    """Every Linear of the model applied to a (B, 1, in) input, ``steps`` times: the matmul floor of ``steps``
    decode steps (the same kernels, weights and dtype; no attention, norms or Python around them)."""
    linears = [m for m in model.modules() if isinstance(m, (nn.Linear, Int8PackedLinear))]
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    device = next(model.parameters()).device
    inputs = [torch.randn(batch, 1, m.in_features, dtype=dtype, device=device) for m in linears]

    def run() -> None:
        for _ in range(steps):
            for m, x in zip(linears, inputs):
                m(x)
    return run


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> float:
    """The most memory one call holds at once beyond what existed before it: CUDA's allocator peak, or on CPU the
    running sum of the allocations and frees torch's profiler records (KV caches, activations, logits)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    held = peak = 0
    for event in sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start):
        held += event.self_cpu_memory_usage
        peak = max(peak, held)
    return peak / 2**20


def copy_bandwidth(device: torch.device, megabytes: int = 512) -> Callable[[], None]:
    """A copy of a tensor far larger than the caches: bytes read + written per call = 2 x its size."""
    src = torch.empty(megabytes << 18, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def _ours_generate(model: nn.Module, ids: torch.Tensor, n: int, compile: bool = False) -> Callable[[], Any]:
    return lambda: model.generate(ids, n, temperature=0, **({"compile": True} if compile else {}))


def _hf_generate(model: nn.Module, ids: torch.Tensor, n: int) -> Callable[[], Any]:
    mask = torch.ones_like(ids)
    return lambda: model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, use_cache=True, pad_token_id=0)


def _variants(cfg: InferConfig, name: str, size: Size, device: torch.device):  # noqa: ANN202
    """{precision: (ours model, hf model or None)}: HF in each float dtype; our quantized models from fp32."""
    from framework.quantization import QuantizationConfig, quantize_model

    ours32, hf32 = _pair(name, size, cfg)
    out = {}
    for precision in cfg.precisions:
        if precision in FLOATS:
            dtype = FLOATS[precision]
            out[precision] = (copy.deepcopy(ours32).to(device, dtype),
                              copy.deepcopy(hf32).to(device, dtype) if cfg.hf else None)
        else:
            model = copy.deepcopy(ours32).to(device)
            quantize_model(model, QuantizationConfig(**QUANTIZED[precision], skip_indivisible=True))
            out[precision] = (model, None)
    if cfg.compile:
        out["fp32+compile"] = (copy.deepcopy(ours32).to(device), None)
    return out


def run(cfg: InferConfig) -> list[dict[str, Any]]:
    device = setup_device(cfg.device, cfg.threads)
    rows: list[dict[str, Any]] = []
    for size in cfg.sizes:
        for name in cfg.models:
            variants = _variants(cfg, name, size, device)
            for batch in cfg.batches:
                ids = torch.randint(0, cfg.vocab, (batch, cfg.prompt), generator=torch.Generator().manual_seed(0))
                ids = ids.to(device)
                same = same_tokens(variants, ids, min(cfg.new_tokens, 16)) if cfg.hf else {}
                fns: dict[str, Callable[[], Any]] = {"copy": copy_bandwidth(device)}
                for precision, (ours, hf) in variants.items():
                    compiled = precision.endswith("+compile")
                    fns[f"{precision}/ours/1"] = _ours_generate(ours, ids, 1, compiled)
                    fns[f"{precision}/ours/n"] = _ours_generate(ours, ids, cfg.new_tokens, compiled)
                    fns[f"{precision}/ours/matmuls"] = matmuls_of_a_step(ours, batch, cfg.new_tokens - 1)
                    if hf is not None:
                        fns[f"{precision}/hf/1"] = _hf_generate(hf, ids, 1)
                        fns[f"{precision}/hf/n"] = _hf_generate(hf, ids, cfg.new_tokens)
                with torch.inference_mode():
                    t = time_interleaved(fns, device, cfg.rounds, warmup=1)
                bandwidth = 2 * (512 << 20) / t["copy"].median  # bytes/s
                with torch.inference_mode():
                    peaks = {k.removesuffix("/n"): peak_memory_mb(fn, device) for k, fn in fns.items() if k.endswith("/n")}
                for row in _rows(cfg, name, size, batch, variants, t, bandwidth):
                    row["same_tokens"] = same.get(row["precision"]) if row["impl"] == "archlab" else None
                    row["peak_mb"] = peaks.get(f"{row['precision']}/{'ours' if row['impl'] == 'archlab' else 'hf'}")
                    rows.append(row)
    return rows


def same_tokens(variants: dict, ids: torch.Tensor, n: int) -> dict[str, bool]:
    """Whether ours and Hugging Face generate the same greedy tokens (fp32: they hold the same weights)."""
    out = {}
    for precision, (ours, hf) in variants.items():
        if hf is not None and precision == "fp32":
            with torch.inference_mode():
                out[precision] = torch.equal(_ours_generate(ours, ids, n)(), _hf_generate(hf, ids, n)())
    return out


def _decode_seconds(t: dict, key: str) -> list[float]:
    return [max(1e-9, n - one) for n, one in zip(t[f"{key}/n"].seconds, t[f"{key}/1"].seconds)]


def _rows(cfg: InferConfig, name: str, size: Size, batch: int, variants: dict, t: dict, bandwidth: float) -> list[dict]:
    rows = []
    steps = cfg.new_tokens - 1
    base = _decode_seconds(t, "fp32/ours") if "fp32" in variants else None
    for precision, (ours, hf) in variants.items():
        for side in ("ours", "hf"):
            if side == "hf" and hf is None:
                continue
            key = f"{precision}/{side}"
            decode = _decode_seconds(t, key)
            step_s = statistics.median(decode) / steps
            model = ours if side == "ours" else hf
            wbytes = weight_bytes_per_step(model)
            row = {
                "model": name, "size": size.label, "batch": batch, "precision": precision,
                "impl": "archlab" if side == "ours" else "HF generate",
                "prefill_tps": batch * cfg.prompt / t[f"{key}/1"].median,
                "decode_tps": batch * steps / statistics.median(decode),
                "weights_mb": wbytes / 2**20,
                "bw_share": (wbytes / bandwidth) / step_s,
                "matmul_share": t[f"{precision}/ours/matmuls"].median / steps / step_s if side == "ours" else None,
                "bandwidth_gbs": bandwidth / 1e9,
            }
            if side == "ours" and hf is not None:
                ratio = paired_timing(_decode_seconds(t, f"{precision}/hf"), decode)
                row["vs_hf"], row["vs_hf_iqr"] = ratio.median, ratio.iqr
            if side == "ours" and base is not None and precision != "fp32":
                ratio = paired_timing(base, decode)
                row["vs_fp32"], row["vs_fp32_iqr"] = ratio.median, ratio.iqr
            rows.append(row)
    return rows


def paired_timing(slow: list[float], fast: list[float]):  # noqa: ANN201
    return paired(Timing(slow), Timing(fast))


COLUMNS = [
    Column("model", "model", align="<"), Column("size", "size", align="<"), Column("batch", "B"),
    Column("precision", "precision", align="<"), Column("impl", "impl", align="<"),
    Column("prefill_tps", "prefill tok/s", "{:.0f}"), Column("decode_tps", "decode tok/s", "{:.1f}"),
    Column("vs_hf", "vs HF", "{:.2f}x"), Column("vs_hf_iqr", "IQR", "{}"),
    Column("vs_fp32", "vs our fp32", "{:.2f}x"), Column("vs_fp32_iqr", "IQR", "{}"),
    Column("weights_mb", "weights/step MB", "{:.1f}"), Column("bw_share", "of bw bound", "{:.0%}"),
    Column("matmul_share", "matmuls", "{:.0%}"),
    Column("peak_mb", "peak +MB", "{:.1f}"),
    Column("same_tokens", "= HF tokens", "{}"),
]


def report(rows: list[dict[str, Any]], cfg: InferConfig, device: torch.device) -> str:
    bw = statistics.median(r["bandwidth_gbs"] for r in rows) if rows else 0.0
    lines = [f"archlab bench infer: greedy, prompt {cfg.prompt}, {cfg.new_tokens} new tokens, {cfg.rounds} rounds "
             f"interleaved, {describe_device(device)}, copy bandwidth {bw:.1f} GB/s (median)", "",
             format_table(rows, COLUMNS), "",
             "vs HF: HF decode time / ours, per round (median, IQR); vs our fp32 likewise. 'of bw bound': "
             "(weight bytes a step reads / copy bandwidth) / the measured step time (above 100%: the weights sit in the "
             "CPU caches). 'matmuls': the step's Linear layers alone (same weights, kernels, batch) / the step; the rest "
             "is attention, norms and Python. 'peak +MB': the most memory a generate call holds at once beyond the "
             "weights (CUDA: allocator peak; CPU: torch's allocations and frees, from its profiler). '= HF tokens': the first 16 greedy tokens equal Hugging Face's (fp32, same weights).", "", "targets (issue 15):"]
    for what, target in TARGETS.items():
        lines.append(f"  {what}: >= {target}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> InferConfig:
    p = argparse.ArgumentParser(prog="archlab bench infer", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=None, help=f"comma-separated {Size.SPEC} (default 256x4x8,1024x8x16)")
    p.add_argument("--models", default="gpt,llama")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--precisions", default=",".join(["fp32", "bf16", *QUANTIZED]))
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-hf", action="store_true", help="ours only (no transformers needed)")
    p.add_argument("--compile", action="store_true", help="also fp32 with a torch.compile'd decode step")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    try:
        sizes = [Size.parse(s) for s in a.sizes.split(",")] if a.sizes else InferConfig().sizes
        return InferConfig(sizes=sizes, models=tuple(a.models.split(",")),
                           batches=tuple(int(b) for b in a.batches.split(",")),
                           precisions=tuple(a.precisions.split(",")), prompt=a.prompt, new_tokens=a.new_tokens,
                           rounds=a.rounds, hf=not a.no_hf, compile=a.compile, device=a.device,
                           threads=a.threads)
    except ValueError as err:
        p.error(str(err))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    start = time.perf_counter()
    rows = run(cfg)
    device = setup_device(cfg.device, cfg.threads)
    synchronize(device)
    print(report(rows, cfg, device))
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
