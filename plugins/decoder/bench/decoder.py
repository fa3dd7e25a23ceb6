"""``archlab bench decoder``: training throughput of the decoder plugin's GPT-2 and Llama configurations against
Hugging Face at equal size.

Registered as the ``decoder`` entry of the ``archlab.benchmarks`` entry-point group (the core's ``run_bench``
finds it there, as it finds every benchmark). Ours is ``build_model("decoder", ...)`` with the settings of the
``gpt`` and ``llama`` presets, given explicitly; the table calls the two rows ``gpt`` and ``llama``.

Each training step is forward + fp32 cross-entropy + backward + AdamW, identical code for both sides;
only the model differs. Hugging Face runs ``GPT2LMHeadModel`` / ``LlamaForCausalLM`` with
``attn_implementation="sdpa"`` (its fastest path on CPU) and ``use_cache=False`` (what training wants).
All variants of a size, both dtypes and the matmul peaks are timed interleaved in the same run
(see ``framework.bench.common``), so "ours / HF" ratios stay meaningful on a shared machine.

    archlab bench decoder                                  # d256 L4 H8, batch 8 x 256, fp32 and bf16
    archlab bench decoder --sizes 256x4x8,512x8x8 --steps 20
    python -m plugins.decoder.bench.decoder --dtype bf16 --models llama
    archlab bench decoder --threads 1     # steadier ratios when other jobs share the CPU cores
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from framework import build_model, make_config
from framework.bench.common import (
    Column,
    autocast,
    default_matmul_size,
    describe_device,
    format_table,
    matmul_fn,
    paired_ratios,
    pick_device,
    quartiles,
    time_interleaved,
    verdict_vs_hf,
)

ARCHS = ("gpt", "llama")
HF_NAMES = {"gpt": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}
TARGET_RATIO = 1.0  # the goal: ours at least as fast as Hugging Face
NOISY_SPREAD = 0.5  # (max - min) / median step time above which the report warns of a busy machine


@dataclass(frozen=True)
class Size:
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None  # llama only; None = n_heads // 2 (GPT-2 always uses n_heads)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else max(1, self.n_heads // 2)

    @property
    def label(self) -> str:
        return f"d{self.d_model} L{self.n_layers} H{self.n_heads}/{self.kv_heads}"

    @classmethod
    def parse(cls, spec: str) -> Size:
        """``DxLxH`` or ``DxLxHxKV``, e.g. ``512x8x8`` or ``512x8x8x2``."""
        try:
            parts = [int(p) for p in spec.lower().split("x")]
        except ValueError:
            parts = []
        if len(parts) not in (3, 4) or min(parts) < 1:
            raise ValueError(f"size {spec!r}: expected DxLxH or DxLxHxKV with positive integers, e.g. 512x8x8")
        return cls(*parts)


@dataclass
class BenchConfig:
    sizes: list[Size] = field(default_factory=lambda: [Size(256, 4, 8)])
    batch: int = 8
    seq: int = 256
    vocab: int = 256                    # byte-level
    steps: int = 10                     # timed rounds; each round runs one step of every variant
    warmup: int = 2                     # untimed steps per variant first
    dtypes: tuple[str, ...] = ("fp32", "bf16")
    archs: tuple[str, ...] = ARCHS
    device: str = "auto"
    matmul_size: int | None = None      # side of the square peak matmul; None = 2048 on CPU, 8192 on GPU
    threads: int | None = None          # CPU intra-op threads (torch.set_num_threads); None = torch's default

    def __post_init__(self) -> None:
        for a in self.archs:
            if a not in ARCHS:
                raise ValueError(f"models: {a!r} is not one of {', '.join(ARCHS)}")
        for d in self.dtypes:
            if d not in ("fp32", "bf16", "fp16"):
                raise ValueError(f"dtype: {d!r} is not one of fp32, bf16, fp16")
        for name in ("batch", "seq", "vocab", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


# --- model pairs at the same size -----------------------------------------------------------------


def llama_d_ff(d_model: int) -> int:
    """Our gated-FFN width rule (8/3 d rounded up to 64), given explicitly to both sides."""
    return make_config("decoder", d_model=d_model, ffn="swiglu").ffn_width(gated=True)


def build_ours(arch: str, size: Size, cfg: BenchConfig) -> nn.Module:
    common = dict(vocab_size=cfg.vocab, d_model=size.d_model, n_layers=size.n_layers, n_heads=size.n_heads,
                  max_seq_len=cfg.seq, dropout=0.0)
    if arch == "gpt":
        return build_model("decoder", **common)
    return build_model(
        "decoder", **common, position="rope", norm="rmsnorm", norm_eps=1e-6, ffn="swiglu", bias=False,
        n_kv_heads=size.kv_heads, tie_weights=False, d_ff=llama_d_ff(size.d_model),
    )


def build_hf(arch: str, size: Size, cfg: BenchConfig) -> nn.Module:
    import transformers

    if arch == "gpt":
        hf_cfg = transformers.GPT2Config(
            vocab_size=cfg.vocab, n_positions=cfg.seq, n_embd=size.d_model, n_layer=size.n_layers,
            n_head=size.n_heads, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, layer_norm_epsilon=1e-5, tie_word_embeddings=True, use_cache=False,
            bos_token_id=None, eos_token_id=None,
        )
        hf_cfg._attn_implementation = "sdpa"
        return transformers.GPT2LMHeadModel(hf_cfg)
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab, hidden_size=size.d_model, intermediate_size=llama_d_ff(size.d_model),
        num_hidden_layers=size.n_layers, num_attention_heads=size.n_heads, num_key_value_heads=size.kv_heads,
        max_position_embeddings=cfg.seq, rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, attention_dropout=0.0, use_cache=False,
    )
    hf_cfg._attn_implementation = "sdpa"
    return transformers.LlamaForCausalLM(hf_cfg)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, N): N leaves out embedding lookups (token, position) but keeps the output
    projection, tied or not, since it is a matmul (nanoGPT's ``get_num_params(non_embedding=True)``)."""
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    matmuls = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    params = list(model.parameters())  # tied tensors once
    total = sum(p.numel() for p in params)
    n = sum(p.numel() for p in params if id(p) not in lookups or id(p) in matmuls)
    return total, n


def flops_per_token(n: int, size: Size, seq: int) -> float:
    """Training FLOPs per token, 6N + 12 * layers * heads * head_dim * T (PaLM; nanoGPT's estimate_mfu)."""
    return 6.0 * n + 12.0 * size.n_layers * size.d_model * seq


# --- the training step ----------------------------------------------------------------------------


def logits_fn(model: nn.Module, impl: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, T) ids -> (B, T, V) logits; Hugging Face without its KV cache, as in training."""
    if impl == "ours":
        return lambda ids: model(ids).logits
    return lambda ids: model(input_ids=ids, use_cache=False).logits


def make_train_step(
    model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
    x: torch.Tensor, y: torch.Tensor, device: torch.device, dtype: str,
) -> Callable[[], None]:
    """One step: forward under autocast, fp32 cross-entropy (as our training loop), backward, AdamW."""

    def step() -> None:
        with autocast(device, dtype):
            logits = forward(x)  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run_size(size: Size, cfg: BenchConfig, device: torch.device) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=gen).to(device)
    y = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=gen).to(device)

    variants: dict[tuple[str, str], dict[str, Any]] = {}  # (arch, impl) -> model info
    for arch in cfg.archs:
        for impl in ("ours", "hf"):
            torch.manual_seed(0)
            model = (build_ours if impl == "ours" else build_hf)(arch, size, cfg).to(device).train()
            forward = logits_fn(model, impl)
            total, n = count_params(model)
            # One optimizer per model, shared by its dtypes (AdamW's update is the same either way).
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
            variants[arch, impl] = dict(model=model, forward=forward, opt=opt, params=total, n=n)

    fns: dict[str, Callable[[], Any]] = {}
    for dtype in cfg.dtypes:
        for (arch, impl), v in variants.items():
            fns[f"{arch}/{impl}/{dtype}"] = make_train_step(v["model"], v["forward"], v["opt"], x, y, device, dtype)
    peak_flops: dict[str, float] = {}
    for dtype in cfg.dtypes:
        mm, peak_flops[dtype] = matmul_fn(device, dtype, cfg.matmul_size or default_matmul_size(device))
        fns[f"matmul/{dtype}"] = mm
    timings = time_interleaved(fns, device, rounds=cfg.steps, warmup=cfg.warmup)
    peak = {dtype: peak_flops[dtype] / timings[f"matmul/{dtype}"].median for dtype in cfg.dtypes}

    tokens = cfg.batch * cfg.seq
    rows = []
    for arch in cfg.archs:
        matched = variants[arch, "ours"]["params"] == variants[arch, "hf"]["params"]
        for dtype in cfg.dtypes:
            hf_timing = timings[f"{arch}/hf/{dtype}"]
            for impl in ("ours", "hf"):
                v, t = variants[arch, impl], timings[f"{arch}/{impl}/{dtype}"]
                per_round = paired_ratios(hf_timing, t) if impl == "ours" else None
                ratio = statistics.median(per_round) if per_round else None
                iqr = quartiles(per_round) if per_round else None
                tok_s = tokens / t.median
                fpt = flops_per_token(v["n"], size, cfg.seq)
                rows.append(dict(
                    size=size.label, arch=arch, impl=impl,
                    model=f"{arch} (ours)" if impl == "ours" else f"HF {HF_NAMES[arch]} (sdpa)",
                    dtype=dtype, params=v["params"], n_params=v["n"], flops_per_token=fpt,
                    seconds_per_step=t.median, spread=t.spread, tokens_per_s=tok_s,
                    ratio_vs_hf=1.0 if impl == "hf" else ratio, median_ratio=hf_timing.median / t.median,
                    ratio_iqr=None if iqr is None else f"{iqr[0]:.2f}-{iqr[1]:.2f}",
                    mfu=fpt * tok_s / peak[dtype],
                    peak_flops=peak[dtype], params_match=matched,
                    verdict=verdict_vs_hf(ratio, iqr, matched, TARGET_RATIO),
                ))
    return rows


def run(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Benchmark every size of ``cfg``; one row per (size, arch, ours|hf, dtype)."""
    device = pick_device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    rows: list[dict[str, Any]] = []
    for size in cfg.sizes:
        rows.extend(run_size(size, cfg, device))
    return rows


COLUMNS = [
    Column("size", "size", align="<"),
    Column("model", "model", align="<"),
    Column("dtype", "dtype", align="<"),
    Column("params", "params", "{:,}"),
    Column("n_params", "N", "{:,}"),
    Column("tokens_per_s", "tokens/s", "{:,.0f}"),
    Column("spread", "spread", "{:.0%}"),
    Column("ratio_vs_hf", "vs HF", "{:.2f}x"),
    Column("ratio_iqr", "IQR"),
    Column("median_ratio", "tok/s ratio", "{:.2f}x"),
    Column("mfu", "MFU", "{:.1%}"),
    Column("verdict", "verdict", align="<"),
]


def report(rows: Sequence[dict[str, Any]], cfg: BenchConfig) -> str:
    import transformers

    device = pick_device(cfg.device)
    lines = [
        "archlab bench decoder: training step (forward + fp32 cross-entropy + backward + AdamW), "
        f"batch {cfg.batch} x seq {cfg.seq}, vocab {cfg.vocab}, {cfg.steps} timed rounds, "
        f"device {describe_device(device)}",
        f"baseline: transformers {transformers.__version__}, attn_implementation=\"sdpa\", use_cache=False; "
        f"bf16/fp16 = torch.autocast({device.type!r}) over fp32 weights",
        "",
        format_table(rows, COLUMNS),
        "",
        "size dD LL HQ/KV: d_model, layers, query heads / llama's key-value heads (GPT-2 has KV = Q heads).",
        "params: all parameters (tied counted once); N: without embedding lookups, output projection kept.",
        "tokens/s: batch*seq / median step time; spread: (max-min)/median step time over the rounds;",
        "vs HF: median over rounds of HF step time / our step time in the same round (the verdict uses it);",
        "IQR: middle half of those per-round ratios (parity within noise: median < 1 <= third quartile);",
        "tok/s ratio: ours / HF median tokens/s (the two differ when the load changes within a run);",
        "MFU: (6N + 12 * layers * d_model * seq) * tokens/s / matmul peak of the same dtype.",
    ]
    peaks = {}
    for r in rows:
        peaks.setdefault(r["size"], {})[r["dtype"]] = r["peak_flops"]
    for label, by_dtype in peaks.items():
        text = ", ".join(f"{d} {p / 1e9:,.0f} GFLOP/s" for d, p in by_dtype.items())
        lines.append(f"matmul peak measured in the run ({label}): {text}")
    noisy = [r for r in rows if r["spread"] > NOISY_SPREAD]
    if noisy:
        lines.append(
            f"warning: step times of {len(noisy)} rows varied by more than {NOISY_SPREAD:.0%} across rounds (a busy "
            "machine): trust the IQR, rerun with more --steps, or pin --threads below the number of free cores."
        )
    ours = [r for r in rows if r["impl"] == "ours"]
    below = [r for r in ours if r["ratio_vs_hf"] < TARGET_RATIO or not r["params_match"]]
    lines.append("")
    lines.append(
        f"verdict: ours >= HF at every size and dtype (target {TARGET_RATIO:.1f}x)" if not below else
        f"verdict: {len(below)} of {len(ours)} rows below target {TARGET_RATIO:.1f}x: "
        + "; ".join(f"{r['size']} {r['arch']} {r['dtype']} {r['ratio_vs_hf']:.3f}x"
                    + (" (within noise)" if r["verdict"].startswith("parity") else "") for r in below)
    )
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> BenchConfig:
    p = argparse.ArgumentParser(
        prog="archlab bench decoder",
        description="Training throughput of the decoder plugin (GPT-2 and Llama settings) vs Hugging Face GPT-2/Llama "
                    "at the same size.",
    )
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=None, help="llama key/value heads (default heads/2)")
    p.add_argument("--sizes", default=None,
                   help="comma-separated DxLxH[xKV] sizes, e.g. 256x4x8,512x8x8 (replaces --d-model/--layers/--heads)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="timed rounds (one step of every variant each)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    p.add_argument("--models", default="gpt,llama", help="comma-separated: gpt, llama")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--matmul-size", type=int, default=None, help="side of the square peak matmul")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: torch's); 1 gives steadier ratios on a machine shared with other jobs")
    args = p.parse_args(list(argv))
    try:
        sizes = ([Size.parse(s) for s in args.sizes.split(",") if s.strip()] if args.sizes
                 else [Size(args.d_model, args.layers, args.heads, args.kv_heads)])
        return BenchConfig(
            sizes=sizes, batch=args.batch, seq=args.seq, vocab=args.vocab, steps=args.steps, warmup=args.warmup,
            dtypes=tuple(d.strip() for d in args.dtype.split(",") if d.strip()),
            archs=tuple(a.strip() for a in args.models.split(",") if a.strip()),
            device=args.device, matmul_size=args.matmul_size, threads=args.threads,
        )
    except ValueError as err:
        p.error(str(err))


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    print(report(run(cfg), cfg), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
