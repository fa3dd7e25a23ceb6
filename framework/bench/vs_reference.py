"""Ours against a Hugging Face reference at equal size: training-step throughput, as ratios measured in one run.

Such a benchmark is a list of ``Case``s, one per architecture: how to build ours and the reference at a
``Size``, what a batch holds and how each side turns it into logits. A ``Bench`` gives the list its ``run``,
``report``, ``parse_args`` and ``main``, so a plugin's benchmark module is its cases and a ``Bench``.

Each step is forward + fp32 cross-entropy on the scored positions + backward + AdamW, the same code for both
sides (``common.make_train_step``): only the model differs, and each side computes logits as its own training
does. All variants of a size and every dtype, plus matmul peaks when cases give their FLOPs (the MFU column),
are timed interleaved round by round; "vs HF" is the median of per-round ratios, so it holds on a shared machine.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

from framework.output import ModelOutput

from .common import (DTYPES, Column, Timing, add_device_args, add_int_args, comma_list, count_params,
                     default_matmul_size, describe_device, format_table, make_train_step, matmul_fn, paired,
                     pick_device, require_positive, setup_device, time_interleaved, token_loss, verdict_vs_hf)

TARGET_RATIO = 1.0  # the goal: ours at least as fast as Hugging Face
NOISY_SPREAD = 0.5  # (max - min) / median step time above which the report warns of a busy machine

Batch = dict[str, torch.Tensor]  # model inputs plus "labels" (-100 = not scored)
# model, batch -> (logits (..., V), labels (...)) aligned: (B, T, V) and batch["labels"], or the scored
# positions only when the model computes just those (ModelOutput.scored)
Logits = Callable[[nn.Module, Batch], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Size:
    """The size both sides are built at; a benchmark may subclass it with optional trailing dimensions."""

    d_model: int
    n_layers: int  # encoder-decoders: layers in each stack
    n_heads: int

    SPEC: ClassVar[str] = "DxLxH"  # the --sizes syntax, for messages

    def __post_init__(self) -> None:
        if min(self.d_model, self.n_layers, self.n_heads) < 1 or self.d_model % self.n_heads:
            raise ValueError(f"size {self.label}: needs dimensions >= 1, d_model divisible by heads")

    @property
    def label(self) -> str:
        return f"d{self.d_model} L{self.n_layers} H{self.n_heads}"

    @classmethod
    def parse(cls, spec: str) -> Size:
        """``DxLxH`` and a subclass's optional dimensions, e.g. ``512x8x8``."""
        try:
            parts = [int(p) for p in spec.lower().split("x")]
        except ValueError:
            parts = []
        if not 3 <= len(parts) <= len(fields(cls)) or min(parts) < 1:
            raise ValueError(f"size {spec!r}: expected {cls.SPEC} with positive integers, e.g. 512x8x8")
        return cls(*parts)

    @classmethod
    def add_flags(cls, p: argparse.ArgumentParser) -> None:
        """A flag per dimension, stored under the field's name: the one size run without ``--sizes``."""
        p.add_argument("--d-model", type=int, default=256)
        p.add_argument("--layers", dest="n_layers", type=int, default=4)
        p.add_argument("--heads", dest="n_heads", type=int, default=8)

    @classmethod
    def from_flags(cls, args: argparse.Namespace) -> Size:
        return cls(*(getattr(args, f.name) for f in fields(cls)))


@dataclass
class BenchConfig:
    sizes: list[Size] = field(default_factory=lambda: [Size(256, 4, 8)])
    batch: int = 8
    seq: int = 256
    vocab: int = 256                        # byte-level
    steps: int = 10                         # timed rounds; each round runs one step of every variant
    warmup: int = 2                         # untimed steps per variant first
    dtypes: tuple[str, ...] = ("fp32", "bf16")
    models: tuple[str, ...] | None = None   # case names; None = every case
    device: str = "auto"
    matmul_size: int | None = None          # side of the square peak matmul (MFU); None = 2048 on CPU, 8192 on GPU
    threads: int | None = None              # CPU intra-op threads; None = torch's default

    def __post_init__(self) -> None:
        for d in self.dtypes:
            if d not in DTYPES:
                raise ValueError(f"dtype: {d!r} is not one of {', '.join(DTYPES)}")
        require_positive(self, "batch", "seq", "steps")
        if self.vocab < 3:  # room for the special ids a case may reserve ([MASK], a start token)
            raise ValueError(f"vocab must be >= 3, got {self.vocab}")


@dataclass(frozen=True)
class Case:
    """One architecture: ours against its Hugging Face reference at the same size."""

    name: str                                              # the --models choice and the rows' arch, e.g. "bert"
    hf_label: str                                          # the reference's row label
    build_ours: Callable[[Size, BenchConfig], nn.Module]
    build_hf: Callable[[Size, BenchConfig], nn.Module]
    make_batch: Callable[[BenchConfig, torch.Generator], Batch]
    ours_logits: Logits
    hf_logits: Logits
    # training FLOPs per token from (N, size, seq), N as in common.matmul_params; given, the rows get an MFU
    flops_per_token: Callable[[int, Size, int], float] | None = None


def aligned(out: ModelOutput, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Our model's logits and the batch's labels in their layout (every position, or the scored ones)."""
    return out.logits, out.aligned_labels(batch["labels"])


def _side(build: Callable[[Size, BenchConfig], nn.Module], logits_of: Logits, batch: Batch, size: Size,
          cfg: BenchConfig, device: torch.device) -> tuple[tuple[int, int], dict[str, Callable[[], None]]]:
    """One model: its (params, N) and a train step per dtype, all with one optimizer (AdamW's update is the
    same whatever the dtype)."""
    torch.manual_seed(0)
    model = build(size, cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

    def loss() -> torch.Tensor:
        return token_loss(*logits_of(model, batch))

    return count_params(model), {d: make_train_step(loss, model, opt, device, d) for d in cfg.dtypes}


def _rows(case: Case, counts: dict[str, tuple[int, int]], timings: dict[str, Timing], size: Size, dtype: str,
          cfg: BenchConfig, peak: float | None) -> list[dict[str, Any]]:
    """The ours and hf rows of a case in a dtype; ours carries the ratios paired by round."""
    matched = counts["ours"][0] == counts["hf"][0]
    hf_timing = timings[f"{case.name}/hf/{dtype}"]
    rows = []
    for impl, (params, n) in counts.items():
        t = timings[f"{case.name}/{impl}/{dtype}"]
        r = paired(hf_timing, t) if impl == "ours" else None  # None: the reference, the baseline itself
        ratio, iqr = (r.median, (r.q1, r.q3)) if r else (None, None)
        row = dict(
            size=size.label, arch=case.name, impl=impl, model=case.hf_label if r is None else f"{case.name} (ours)",
            dtype=dtype, params=params, n_params=n, params_match=matched, seconds_per_step=t.median,
            spread=t.spread, tokens_per_s=cfg.batch * cfg.seq / t.median, ratio_vs_hf=1.0 if r is None else ratio,
            median_ratio=hf_timing.median / t.median, ratio_iqr=None if r is None else r.iqr,
            verdict=verdict_vs_hf(ratio, iqr, matched, TARGET_RATIO),
        )
        if case.flops_per_token and peak is not None:
            fpt = case.flops_per_token(n, size, cfg.seq)
            row.update(flops_per_token=fpt, mfu=fpt * row["tokens_per_s"] / peak, peak_flops=peak)
        rows.append(row)
    return rows


def run_size(size: Size, cfg: BenchConfig, cases: Sequence[Case], device: torch.device) -> list[dict[str, Any]]:
    """Both sides of every case at ``size``, every dtype, in one interleaved timing; a row per (case, side, dtype)."""
    counts: dict[str, dict[str, tuple[int, int]]] = {}
    steps: dict[tuple[str, str], dict[str, Callable[[], None]]] = {}
    for case in cases:
        batch = {k: v.to(device) for k, v in case.make_batch(cfg, torch.Generator().manual_seed(0)).items()}
        counts[case.name] = {}
        for impl, build, logits_of in (("ours", case.build_ours, case.ours_logits),
                                       ("hf", case.build_hf, case.hf_logits)):
            counts[case.name][impl], steps[case.name, impl] = _side(build, logits_of, batch, size, cfg, device)
    fns = {f"{name}/{impl}/{d}": by_dtype[d] for d in cfg.dtypes for (name, impl), by_dtype in steps.items()}
    matmul_flops: dict[str, float] = {}
    if any(case.flops_per_token for case in cases):  # the MFU's peak, timed under the same load as the models
        for d in cfg.dtypes:
            fns[f"matmul/{d}"], matmul_flops[d] = matmul_fn(device, d, cfg.matmul_size or default_matmul_size(device))
    timings = time_interleaved(fns, device, rounds=cfg.steps, warmup=cfg.warmup)
    peaks = {d: flops / timings[f"matmul/{d}"].median for d, flops in matmul_flops.items()}
    return [row for case in cases for d in cfg.dtypes
            for row in _rows(case, counts[case.name], timings, size, d, cfg, peaks.get(d))]


def columns(mfu: bool) -> list[Column]:
    """The table's columns; N and MFU only when rows carry an MFU."""
    cols = [
        Column("size", "size", align="<"), Column("model", "model", align="<"), Column("dtype", "dtype", align="<"),
        Column("params", "params", "{:,}"), Column("n_params", "N", "{:,}"),
        Column("tokens_per_s", "tokens/s", "{:,.0f}"), Column("spread", "spread", "{:.0%}"),
        Column("ratio_vs_hf", "vs HF", "{:.2f}x"), Column("ratio_iqr", "IQR"),
        Column("median_ratio", "tok/s ratio", "{:.2f}x"), Column("mfu", "MFU", "{:.1%}"),
        Column("verdict", "verdict", align="<"),
    ]
    return [c for c in cols if mfu or c.key not in ("n_params", "mfu")]


def summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The matmul peaks, a warning for noisy rows, and the verdict line last."""
    peaks: dict[str, dict[str, float]] = {}
    for r in rows:
        if "peak_flops" in r:
            peaks.setdefault(r["size"], {})[r["dtype"]] = r["peak_flops"]
    lines = [f"matmul peak measured in the run ({label}): "
             + ", ".join(f"{d} {p / 1e9:,.0f} GFLOP/s" for d, p in by_dtype.items()) for label, by_dtype in peaks.items()]
    noisy = [r for r in rows if r["spread"] > NOISY_SPREAD]
    if noisy:
        lines.append(
            f"warning: step times of {len(noisy)} rows varied by more than {NOISY_SPREAD:.0%} across rounds (a busy "
            "machine): trust the IQR, rerun with more --steps, or pin --threads below the number of free cores."
        )
    ours = [r for r in rows if r["impl"] == "ours"]
    below = [r for r in ours if r["ratio_vs_hf"] < TARGET_RATIO or not r["params_match"]]
    return [*lines, "", (
        f"verdict: ours >= HF at every size and dtype (target {TARGET_RATIO:.1f}x)" if not below else
        f"verdict: {len(below)} of {len(ours)} rows below target {TARGET_RATIO:.1f}x: "
        + "; ".join(f"{r['size']} {r['arch']} {r['dtype']} {r['ratio_vs_hf']:.3f}x"
                    + (" (within noise)" if r["verdict"].startswith("parity") else "") for r in below)
    )]


@dataclass(frozen=True)
class Bench:
    """``archlab bench <name>`` over ``cases``: its run, report and command line."""

    name: str
    description: str                        # the --help text
    cases: Sequence[Case]                   # in table order
    size: type[Size] = Size                 # what --sizes parses to
    config: type[BenchConfig] = BenchConfig
    legend: Sequence[str] = ()              # report lines after the table: what the size label and MFU mean

    def select(self, models: Sequence[str] | None) -> list[Case]:
        """The cases named in ``models`` (None: all), in table order."""
        names = [c.name for c in self.cases]
        for m in models or ():
            if m not in names:
                raise ValueError(f"models: {m!r} is not one of {', '.join(names)}")
        return [c for c in self.cases if models is None or c.name in models]

    def run(self, cfg: BenchConfig) -> list[dict[str, Any]]:
        """Benchmark every size of ``cfg``; one row per (size, case, ours|hf, dtype)."""
        cases = self.select(cfg.models)
        device = setup_device(cfg.device, cfg.threads)
        return [row for size in cfg.sizes for row in run_size(size, cfg, cases, device)]

    def report(self, rows: Sequence[dict[str, Any]], cfg: BenchConfig) -> str:
        import transformers

        device = pick_device(cfg.device)
        mfu = any("mfu" in r for r in rows)
        return "\n".join([
            f"archlab bench {self.name}: training step (forward + fp32 cross-entropy on the scored positions + "
            f"backward + AdamW), batch {cfg.batch} x seq {cfg.seq}, vocab {cfg.vocab}, {cfg.steps} timed rounds, "
            f"device {describe_device(device)}",
            f"baseline: transformers {transformers.__version__}, attn_implementation=\"sdpa\", no KV cache; dropout 0 "
            f"on both sides; bf16/fp16 = torch.autocast({device.type!r}) over fp32 weights",
            "", format_table(rows, columns(mfu)), "", *self.legend,
            "params: all parameters (tied counted once)"
            + ("; N: without embedding lookups, output projection kept." if mfu else "."),
            "tokens/s: batch*seq / median step time; spread: (max-min)/median step time over the rounds;",
            "vs HF: median over rounds of HF step time / our step time in the same round (the verdict uses it);",
            "IQR: middle half of those per-round ratios (parity within noise: median < 1 <= third quartile);",
            "tok/s ratio: ours / HF median tokens/s (the two differ when the load changes within a run).",
            *summary(rows),
        ])

    def parse_args(self, argv: Sequence[str]) -> BenchConfig:
        p = argparse.ArgumentParser(prog=f"archlab bench {self.name}", description=self.description)
        self.size.add_flags(p)
        p.add_argument("--sizes", default=None, help=f"comma-separated {self.size.SPEC} sizes, e.g. 256x4x8,512x8x8 "
                                                     "(replaces --d-model/--layers/--heads)")
        defaults = self.config()
        add_int_args(p, defaults, "batch", "seq", "vocab", "warmup")
        p.add_argument("--steps", type=int, default=defaults.steps, help="timed rounds (one step of every variant each)")
        p.add_argument("--dtype", default=",".join(defaults.dtypes), help="comma-separated: fp32, bf16, fp16")
        p.add_argument("--models", default=None, help=f"comma-separated: {', '.join(c.name for c in self.cases)} "
                                                      "(default: all)")
        if any(c.flops_per_token for c in self.cases):
            p.add_argument("--matmul-size", type=int, default=None, help="side of the square peak matmul")
        add_device_args(p)
        args = p.parse_args(list(argv))
        try:
            sizes = [self.size.parse(s) for s in comma_list(args.sizes)] or [self.size.from_flags(args)]
            models = tuple(c.name for c in self.select(comma_list(args.models) or None))
            return self.config(
                sizes=sizes, batch=args.batch, seq=args.seq, vocab=args.vocab, steps=args.steps, warmup=args.warmup,
                dtypes=comma_list(args.dtype), models=models, device=args.device, threads=args.threads,
                matmul_size=getattr(args, "matmul_size", None),  # a flag only where cases give FLOPs
            )
        except ValueError as err:
            p.error(str(err))

    def main(self, argv: Sequence[str] | None = None) -> int:
        cfg = self.parse_args(sys.argv[1:] if argv is None else argv)
        print(self.report(self.run(cfg), cfg), flush=True)
        return 0
