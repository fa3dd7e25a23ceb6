"""``archlab bench context``: the cost of context. Training step time and peak tensor memory of one layer of each
token mixer from 1k to 32k tokens, the log-log slope of each (about 2 for dense attention, about 1 for the others),
where each crosses below dense attention, and the ratios at 4k beside Long Range Arena's (Tay et al. 2021, table 3).

Every row is ``build_model("decoder", ...)`` with one layer of the mixer, no channel mixer, at --d-model / --heads
(RoPE for attention kinds), so the rows differ in the token mixer alone; the embedding and the logits cost the same
in each. A step is forward + fp32 cross-entropy + backward + AdamW on one sequence (batch --batch). At each length
every mixer is timed interleaved, round by round, after one warm-up step (ratios to dense are paired by round, so
load on a shared machine cancels). A mixer whose step would exceed --max-step-s (extrapolated from the shorter
lengths) stops there; its row says so.

Peak memory: one more step of each (mixer, length) under ``framework.bench.tensor_memory.PeakTensorMemory``: the
high-water mark of tensor bytes the step allocated (activations kept for backward, temporaries, gradients), the CPU
equivalent of ``torch.cuda.max_memory_allocated``; parameters and the batch are not counted.

Sparse options (window, block, globals, random blocks, stride, LSH chunks) follow ``archlab bench sparse``; LSH gets
T / block buckets at each length (Reformer's chunks of one bucket's size), so its cost grows with T log T.

    archlab bench context                                   # 1k..32k, 14 mixers, d 256, 4 heads: ~20 min on 2 cores
    archlab bench context --mixers attention,sliding_window,mamba --lengths 1k,4k --rounds 2 --out /tmp/ctx
    archlab bench context --from /tmp/ctx/bench_context.json   # the table again from the saved rounds
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from framework import build_model
from framework.bench.common import (Column, Ratio, Timing, comma_list, crossover_length, describe_device,
                                    format_table, make_train_step, paired, time_interleaved, token_label,
                                    token_count, token_loss)
from framework.bench.tensor_memory import PeakTensorMemory

from .mixers import predicted_step

DENSE = "attention"
DENSE_MATH = "attention_math"  # dense attention through SDPA's math backend: the (B, H, T, T) scores materialised
SPARSE = ("sliding_window", "strided", "fixed", "longformer", "bigbird", "lsh")
RECURRENT = ("linear_attention", "gated_deltanet", "mamba", "mamba2", "rglru", "lstm", "gru")
MIXERS = (DENSE, DENSE_MATH, *SPARSE, *RECURRENT)
ATTENTION_KINDS = (DENSE, DENSE_MATH, *SPARSE)  # RoPE positions; the others carry order in their recurrence
# LRA table 3 (TPU v3, byte-level text, 4k tokens): steps/s relative to the vanilla Transformer. Only the two the
# study's issue quotes; a row here is compared at the same length.
LRA_SPEED_4K = {"sliding_window": ("Local Attention", 5.3), "lsh": ("Reformer", 0.8)}
LRA_LENGTH = 4096


@dataclass
class ContextConfig:
    mixers: tuple[str, ...] = MIXERS
    lengths: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384, 32768)
    d_model: int = 256
    n_heads: int = 4
    batch: int = 1
    vocab: int = 256
    window: int = 256            # sliding_window / longformer / bigbird local band (archlab bench sparse's)
    block: int = 64              # blocked kernels' query block; bigbird's random block; lsh chunk
    rounds: int = 3
    fit_from: int = 4096         # slopes are fitted over lengths >= this (shorter ones are fixed-cost bound)
    max_step_s: float = 60.0
    math_max_gib: float = 2.0    # attention_math runs only while one fp32 score matrix is at most this
    memory: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("d_model", "n_heads", "batch", "window", "block", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d-model ({self.d_model}) must split into --heads ({self.n_heads}) of an even size")
        if self.window % self.block:
            raise ValueError(f"block ({self.block}) must divide window ({self.window}) (bigbird's blocks)")
        for m in self.mixers:
            if m not in MIXERS:
                raise ValueError(f"mixers: {m!r} is not one of {', '.join(MIXERS)}")
        if not self.mixers:
            raise ValueError("mixers: give at least one of " + ", ".join(MIXERS))
        if not self.lengths or min(self.lengths) < 2 * self.window:
            raise ValueError(f"lengths: give one or more lengths >= 2 x window ({2 * self.window}), got "
                             f"{','.join(map(str, self.lengths)) or '(none)'}")
        for name in ("max_step_s", "math_max_gib"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")


def model_kwargs(cfg: ContextConfig, mixer: str, seq: int) -> dict[str, Any]:
    """``build_model("decoder", **out)``: one layer of ``mixer`` for sequences of ``seq`` tokens."""
    kw: dict[str, Any] = dict(
        vocab_size=cfg.vocab, d_model=cfg.d_model, n_layers=1, n_heads=cfg.n_heads, max_seq_len=seq, dropout=0.0,
        norm="rmsnorm", bias=False, tie_weights=True, mixer=DENSE if mixer == DENSE_MATH else mixer, ffn="none",
        position="rope" if mixer in ATTENTION_KINDS else "none")
    if mixer in SPARSE:
        kw["sparse"] = {"window": cfg.window, "block_size": cfg.block, "n_global": cfg.block, "n_random": 2,
                        "stride": cfg.window, "n_summary": max(1, cfg.window // 16), "chunk_size": cfg.block,
                        "n_buckets": max(2, 2 * (seq // (2 * cfg.block)))}
    if mixer == "mamba2":
        kw["ssm"] = {"head_dim": 32 if (2 * cfg.d_model) % 32 == 0 else 2 * cfg.d_model}
    return kw


@dataclass
class Cell:
    """One (mixer, length): seconds per step over the rounds, peak tensor bytes; or why it was not run."""

    seconds: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    skipped: str = ""

    @property
    def median(self) -> float | None:
        return Timing(self.seconds).median if self.seconds else None


@dataclass
class Result:
    cfg: ContextConfig
    cells: dict[str, dict[int, Cell]]  # mixer -> length -> cell
    params: dict[str, int]
    device: str


def _step(cfg: ContextConfig, mixer: str, seq: int) -> tuple[Callable[[], None], int]:
    torch.manual_seed(0)
    model: nn.Module = build_model("decoder", **model_kwargs(cfg, mixer, seq))
    batch = torch.randint(0, cfg.vocab, (cfg.batch, seq + 1), generator=torch.Generator().manual_seed(0))
    x, y = batch[:, :-1], batch[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step = make_train_step(lambda: token_loss(model(x).logits, y), model, optimizer, torch.device("cpu"), "fp32")
    if mixer == DENSE_MATH:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        fused = step

        def step() -> None:
            with sdpa_kernel(SDPBackend.MATH):
                fused()

    return step, sum(p.numel() for p in model.parameters())


def score_matrix_bytes(cfg: ContextConfig, seq: int) -> int:
    """One fp32 (B, H, T, T) score matrix: what unfused dense attention holds (several times, with softmax)."""
    return 4 * cfg.batch * cfg.n_heads * seq * seq


def run(cfg: ContextConfig, log: Callable[[str], None] = lambda _: None) -> Result:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cells = {m: {} for m in cfg.mixers}
    params: dict[str, int] = {}
    stopped: dict[str, str] = {}
    for seq in sorted(cfg.lengths):
        steps = {}
        for mixer in cfg.mixers:
            history = [(t, c.median) for t, c in cells[mixer].items() if c.median]
            guess = predicted_step(history, seq, quadratic=mixer == DENSE)
            if mixer not in stopped and guess is not None and guess > cfg.max_step_s:
                stopped[mixer] = f"step predicted {guess:.0f} s > --max-step-s {cfg.max_step_s:g}"
            scores = score_matrix_bytes(cfg, seq) / 2**30
            if mixer == DENSE_MATH and mixer not in stopped and scores > cfg.math_max_gib:
                stopped[mixer] = f"one fp32 score matrix is {scores:.0f} GiB > --math-max-gib {cfg.math_max_gib:g}"
            if mixer in stopped:
                cells[mixer][seq] = Cell(skipped=stopped[mixer])
                continue
            steps[mixer], params[mixer] = _step(cfg, mixer, seq)
        if not steps:  # every mixer has stopped
            continue
        log(f"T={seq}: timing {', '.join(steps)}")
        for mixer, timing in time_interleaved(steps, torch.device("cpu"), cfg.rounds).items():
            cells[mixer][seq] = Cell(seconds=timing.seconds)
        if cfg.memory:
            for mixer, step in steps.items():
                with PeakTensorMemory() as memory:
                    step()
                cells[mixer][seq].peak_bytes = memory.peak_bytes
        del steps
    return Result(cfg, cells, params, describe_device(torch.device("cpu")))


# --- analysis -------------------------------------------------------------------------------------


def loglog_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) against log(x): the exponent k of y ~ x^k; None below two points."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    var = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / var if var else None


def speedup(res: Result, mixer: str, seq: int) -> Ratio | None:
    """Dense step time / this mixer's, paired round by round (> 1: faster than dense)."""
    dense, cell = res.cells.get(DENSE, {}).get(seq), res.cells[mixer].get(seq)
    if not dense or not cell or not dense.seconds or not cell.seconds:
        return None
    return paired(Timing(dense.seconds), Timing(cell.seconds))


def summary_rows(res: Result) -> list[dict[str, Any]]:
    """Per mixer: slopes of time and memory, the speed-up and memory ratio at LRA's length, crossovers vs dense."""
    rows = []
    fit = [t for t in sorted(res.cfg.lengths) if t >= res.cfg.fit_from] or sorted(res.cfg.lengths)
    for mixer, by_len in res.cells.items():
        times = [(t, by_len[t].median) for t in fit if by_len[t].median]
        mems = [(t, by_len[t].peak_bytes) for t in fit if by_len[t].peak_bytes]
        row: dict[str, Any] = {"mixer": mixer, "params": res.params.get(mixer),
                               "time_slope": loglog_slope(times), "memory_slope": loglog_slope(mems)}
        ratio = speedup(res, mixer, LRA_LENGTH) if mixer != DENSE else None
        row["speedup_4k"] = ratio.median if ratio else None
        row["speedup_4k_iqr"] = ratio.iqr if ratio else None
        dense = res.cells.get(DENSE, {})
        if mixer != DENSE and DENSE in res.cells:
            speed = [(t, r.median) for t in sorted(by_len) if (r := speedup(res, mixer, t))]
            row["time_crossover"] = crossover_length(speed) if speed else None
            mem = [(t, dense[t].peak_bytes / by_len[t].peak_bytes) for t in sorted(by_len)
                   if t in dense and dense[t].peak_bytes and by_len[t].peak_bytes]
            row["memory_crossover"] = crossover_length(mem) if mem else None
            if LRA_LENGTH in by_len and by_len[LRA_LENGTH].peak_bytes and dense.get(LRA_LENGTH, Cell()).peak_bytes:
                row["memory_4k"] = by_len[LRA_LENGTH].peak_bytes / dense[LRA_LENGTH].peak_bytes
        rows.append(row)
    return rows


def report(res: Result) -> str:
    cfg = res.cfg
    lengths = sorted(cfg.lengths)
    lines = [f"# archlab bench context: one layer, d_model {cfg.d_model}, {cfg.n_heads} heads, batch {cfg.batch}, "
             f"fp32, window {cfg.window}, block {cfg.block}, {cfg.rounds} rounds; {res.device}",
             "# step = forward + cross-entropy + backward + AdamW; ms = median over rounds (spread: max-min / median);"
             " MiB = peak tensor memory of one step", ""]
    rows = []
    for mixer, by_len in res.cells.items():
        row = {"mixer": mixer}
        for t in lengths:
            cell = by_len[t]
            if cell.median is not None:
                row[f"ms{t}"] = f"{1000 * cell.median:,.0f} ±{100 * Timing(cell.seconds).spread:.0f}%"
            row[f"mb{t}"] = None if cell.peak_bytes is None else cell.peak_bytes / 2**20
        rows.append(row)
    lines.append(format_table(rows, [Column("mixer", "mixer", align="<"),
                                     *[Column(f"ms{t}", f"ms @{token_label(t)}") for t in lengths]]))
    lines += ["", format_table(rows, [Column("mixer", "mixer", align="<"),
                                      *[Column(f"mb{t}", f"MiB @{token_label(t)}", "{:,.1f}") for t in lengths]])]
    fit = [t for t in lengths if t >= cfg.fit_from] or lengths
    lines += ["", f"# slopes: least squares of log(ms) and log(MiB) on log(T) over {', '.join(map(token_label, fit))};"
              f" speed-up = dense ms / mixer ms at {token_label(LRA_LENGTH)} (median and IQR of per-round ratios);"
              " crossover: the length where the mixer gets cheaper than dense (log-log interpolation)",
              format_table(summary_rows(res), [
                  Column("mixer", "mixer", align="<"), Column("params", "params", "{:,}"),
                  Column("time_slope", "time slope", "{:.2f}"), Column("memory_slope", "memory slope", "{:.2f}"),
                  Column("speedup_4k", f"speed-up @{token_label(LRA_LENGTH)}", "{:.2f}x"),
                  Column("speedup_4k_iqr", "IQR", align="<"),
                  Column("memory_4k", f"memory/dense @{token_label(LRA_LENGTH)}", "{:.2f}"),
                  Column("time_crossover", "time crossover", align="<"),
                  Column("memory_crossover", "memory crossover", align="<")])]
    for mixer, (name, published) in LRA_SPEED_4K.items():
        ratio = speedup(res, mixer, LRA_LENGTH) if mixer in res.cells else None
        if ratio:
            lines.append(f"LRA @4k: {name} {published:.1f}x dense (TPU v3); ours {mixer} {ratio.median:.2f}x "
                         f"(IQR {ratio.iqr})")
    skipped = [f"{m} from {token_label(t)}: {c.skipped}" for m, by_len in res.cells.items()
               for t, c in sorted(by_len.items()) if c.skipped and t == min(u for u, d in by_len.items() if d.skipped)]
    if skipped:
        lines += ["", "# not run:", *skipped]
    return "\n".join(lines)


def plot(res: Result, path: Path) -> Path:
    """Two log-log panels, step time and peak memory against T, a line per mixer, slope-1 and slope-2 guides."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from framework.report.plots import colours_for

    colours = colours_for(list(res.cells))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, what, value in ((axes[0], "step time (ms)", lambda c: c.median and 1000 * c.median),
                            (axes[1], "peak tensor memory (MiB)", lambda c: c.peak_bytes and c.peak_bytes / 2**20)):
        for mixer, by_len in res.cells.items():
            pts = [(t, v) for t, c in sorted(by_len.items()) if (v := value(c))]
            if pts:
                style = "-" if mixer in ATTENTION_KINDS else "--"
                ax.plot(*zip(*pts), style, marker="o", markersize=3, color=colours[mixer], label=mixer)
        lo = min(res.cfg.lengths)
        ys = [v for by_len in res.cells.values() for c in by_len.values() if (v := value(c))]
        if ys:
            base = min(ys)
            for k in (1, 2):
                xs = sorted(res.cfg.lengths)
                ax.plot(xs, [base * (x / lo) ** k for x in xs], color="0.6", linewidth=0.8, linestyle=":")
                ax.annotate(f"T^{k}", (xs[-1], base * (xs[-1] / lo) ** k), fontsize=7, color="0.4")
        ax.set(xscale="log", yscale="log", xlabel="context length T (tokens)", ylabel=what)
        ax.set_xticks(sorted(res.cfg.lengths), [token_label(t) for t in sorted(res.cfg.lengths)])
        ax.minorticks_off()
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=7, loc="upper left", ncol=2)
    fig.suptitle(f"cost of context: one layer, d {res.cfg.d_model}, training step (solid: attention kinds; dashed: "
                 "recurrent and linear)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(res: Result, out: Path) -> list[Path]:
    """bench_context.txt (the table), bench_context.json (every round's seconds, every peak: ``load`` reads it
    back) and cost_of_context.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    text = out / "bench_context.txt"
    text.write_text(report(res) + "\n")
    data = {"config": asdict(res.cfg), "device": res.device, "params": res.params,
            "cells": {m: {str(t): asdict(c) for t, c in by_len.items()} for m, by_len in res.cells.items()},
            "summary": summary_rows(res)}
    raw = out / "bench_context.json"
    raw.write_text(json.dumps(data, indent=1) + "\n")
    return [text, raw, plot(res, out / "cost_of_context.png")]


def load(path: Path) -> Result:
    """The Result a ``write`` saved: re-renders the table and plot without measuring again."""
    data = json.loads(Path(path).read_text())
    cfg = dict(data["config"])
    cfg["mixers"], cfg["lengths"] = tuple(cfg["mixers"]), tuple(cfg["lengths"])
    cells = {m: {int(t): Cell(**c) for t, c in by_len.items()} for m, by_len in data["cells"].items()}
    return Result(ContextConfig(**cfg), cells, data["params"], data["device"])


def _lengths(text: str) -> tuple[int, ...]:
    return tuple(token_count("lengths", part) for part in comma_list(text))


def parse_args(argv: Sequence[str]) -> tuple[ContextConfig | Path, Path | None]:
    """The measurement's config, or the path of a saved bench_context.json given by --from."""
    defaults = ContextConfig()
    p = argparse.ArgumentParser(prog="archlab bench context", description=__doc__.split("\n\n")[0])
    p.add_argument("--mixers", default=",".join(defaults.mixers), help="comma list; " + ", ".join(MIXERS))
    p.add_argument("--lengths", default=",".join(map(token_label, defaults.lengths)), help="comma list, e.g. 1k,4k")
    for name in ("d_model", "n_heads", "batch", "window", "block", "rounds", "fit_from"):
        flag = {"n_heads": "heads"}.get(name, name).replace("_", "-")
        p.add_argument(f"--{flag}", dest=name, type=int, default=getattr(defaults, name))
    p.add_argument("--max-step-s", type=float, default=defaults.max_step_s)
    p.add_argument("--math-max-gib", type=float, default=defaults.math_max_gib)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory step")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="write the table, the raw JSON and the plot here")
    p.add_argument("--from", dest="saved", type=Path, default=None, metavar="JSON",
                   help="re-render a saved bench_context.json instead of measuring")
    args = p.parse_args(argv)
    if args.saved is not None:
        if not args.saved.is_file():
            p.error(f"from: {args.saved} is not a file (give the bench_context.json a run with --out wrote)")
        return args.saved, args.out
    try:
        cfg = ContextConfig(mixers=comma_list(args.mixers), lengths=_lengths(args.lengths), d_model=args.d_model,
                            n_heads=args.n_heads, batch=args.batch, window=args.window, block=args.block,
                            rounds=args.rounds, fit_from=args.fit_from, max_step_s=args.max_step_s,
                            math_max_gib=args.math_max_gib,
                            memory=not args.no_memory, threads=args.threads)
    except ValueError as err:
        p.error(str(err))
    return cfg, args.out


def main(argv: Sequence[str] | None = None) -> int:
    cfg, out = parse_args(sys.argv[1:] if argv is None else argv)
    if isinstance(cfg, Path):
        res = load(cfg)
    else:
        res = run(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(report(res))
    if out is not None:
        print("wrote " + ", ".join(str(p) for p in write(res, out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
