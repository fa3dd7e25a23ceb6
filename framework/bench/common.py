"""Helpers shared by the benchmarks: devices, autocast, training steps, interleaved timing, matmul peak, tables.

Machines running these benchmarks are often shared, so absolute numbers drift with the load of the
moment. The helpers here therefore measure every variant in the same run, interleaved round by round
(each round times each variant once, in a rotating order), and report medians and per-round ratios:
a load spike hits all variants of a round alike and cancels out of the ratio.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# --- devices and precision ------------------------------------------------------------------------


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the GPU when one is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so a wall-clock reading covers the work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """Mixed precision by name: ``fp32`` runs as is; ``bf16``/``fp16`` autocast (CPU or CUDA alike)."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    if dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def setup_device(name: str = "auto", threads: int | None = None) -> torch.device:
    """``pick_device(name)``, after pinning the CPU intra-op threads when ``threads`` is set."""
    if threads:
        torch.set_num_threads(threads)
    return pick_device(name)


def add_device_args(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads``, for ``setup_device``."""
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: torch's); 1 gives steadier ratios on a machine shared with other jobs")


def add_int_args(p: argparse.ArgumentParser, defaults: object, *names: str) -> None:
    """``--a-name`` for each attribute ``a_name`` of ``defaults`` (a config), an int defaulting to its value."""
    for name in names:
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))


def comma_list(text: str | None) -> tuple[str, ...]:
    """``"a, b,"`` -> ``("a", "b")``: a comma-separated command-line value."""
    return tuple(s.strip() for s in (text or "").split(",") if s.strip())


def token_count(field: str, text: str) -> int:
    """``"4k"`` -> 4096, ``"4096"`` -> 4096: a number of tokens on the command line; ``field`` names it in errors."""
    number, scale = (text[:-1], 1024) if text.lower().endswith("k") else (text, 1)
    if not number.isdigit():
        raise ValueError(f"{field}: {text!r} is not a number of tokens (e.g. 4096 or 4k)")
    return int(number) * scale


def token_label(tokens: int) -> str:
    """4096 -> ``"4k"``, 1000 -> ``"1000"``: the inverse of ``token_count`` for table headers."""
    return f"{tokens // 1024}k" if tokens % 1024 == 0 else str(tokens)


def require_positive(cfg: object, *names: str) -> None:
    """``ValueError`` for the first of the attributes ``names`` of ``cfg`` below 1."""
    for name in names:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n > 1 else ''})"


# --- models and training steps --------------------------------------------------------------------


def matmul_params(model: nn.Module) -> int:
    """N: parameters outside embedding lookups (token, position); the output projection counts, tied or not,
    since it is a matmul (nanoGPT's ``get_num_params(non_embedding=True)``)."""
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    matmuls = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    return sum(p.numel() for p in model.parameters() if id(p) not in lookups or id(p) in matmuls)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, tied tensors once; N as ``matmul_params``)."""
    return sum(p.numel() for p in model.parameters()), matmul_params(model)


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """fp32 cross-entropy of (..., V) logits against (...) labels, -100 not scored (as our training loop)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)


def make_train_step(
    loss: Callable[[], torch.Tensor], model: nn.Module, optimizer: torch.optim.Optimizer | None,
    device: torch.device, dtype: str,
) -> Callable[[], None]:
    """One step: ``loss()`` under autocast, backward, the optimizer's step (None: forward + backward only)."""

    def step() -> None:
        with autocast(device, dtype):
            value = loss()
        value.backward()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=True)

    return step


# --- timing ---------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Seconds per call of one variant, one entry per round."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median over the rounds: how noisy the measurement was."""
        return (max(self.seconds) - min(self.seconds)) / self.median


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall-clock seconds of one call, device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def time_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, rounds: int, warmup: int = 1
) -> dict[str, Timing]:
    """Time every variant ``rounds`` times, one call each per round, after ``warmup`` untimed calls each.

    The order within a round rotates, so no variant always runs first (cold caches) or right after
    the same neighbour.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(time_call(fns[name], device))
    return {name: Timing(s) for name, s in seconds.items()}


def paired_ratios(slow: Timing, fast: Timing) -> list[float]:
    """slow/fast seconds, round by round: > 1 means ``fast`` is faster in that round.

    Pairing by round cancels load that changes between rounds (a shared machine)."""
    return [a / b for a, b in zip(slow.seconds, fast.seconds)]


def paired_ratio(slow: Timing, fast: Timing) -> float:
    """Median over rounds of slow/fast seconds."""
    return statistics.median(paired_ratios(slow, fast))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """(first, third) quartile; both the value itself when there is one."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


@dataclass(frozen=True)
class Ratio:
    """Per-round slow/fast ratios summarised: median and quartiles."""

    median: float
    q1: float
    q3: float

    @property
    def iqr(self) -> str:
        return f"{self.q1:.2f}-{self.q3:.2f}"


def paired(slow: Timing, fast: Timing) -> Ratio:
    """``paired_ratios`` as median and quartiles: > 1 means ``fast`` is faster."""
    ratios = paired_ratios(slow, fast)
    return Ratio(statistics.median(ratios), *quartiles(ratios))


def crossover_length(points: Sequence[tuple[int, float]]) -> str:
    """Length where a speed-up over the baseline crosses 1, interpolated in log-log between measured lengths:
    "<= T" when already faster at the shortest, "> T" when still slower at the longest."""
    points = sorted(points)
    if points and points[0][1] >= 1.0:
        return f"<= {points[0][0]}"
    for (t0, s0), (t1, s1) in zip(points, points[1:]):
        if s0 < 1.0 <= s1:
            a = math.log(s1) - math.log(s0)
            frac = (0 - math.log(s0)) / a if a else 0.0
            return f"~{round(math.exp(math.log(t0) + frac * (math.log(t1) - math.log(t0))))}"
    return f"> {points[-1][0]}" if points else "-"


# --- matmul peak ----------------------------------------------------------------------------------


def default_matmul_size(device: torch.device) -> int:
    return 8192 if device.type == "cuda" else 2048


def matmul_fn(device: torch.device, dtype: str, n: int) -> tuple[Callable[[], Any], float]:
    """A square (n x n) @ (n x n) matmul in ``dtype`` and its FLOPs (2 n^3).

    Timed alongside the models (as one more interleaved variant), it gives the peak the MFU is
    measured against under the same load."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=DTYPES[dtype])
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=DTYPES[dtype])
    out = torch.empty(n, n, device=device, dtype=DTYPES[dtype])
    return (lambda: torch.mm(a, b, out=out)), 2.0 * n**3


# --- tables ---------------------------------------------------------------------------------------


@dataclass
class Column:
    key: str                 # the row dict's key
    header: str
    fmt: str = "{}"          # applied to the value; None values print as "-"
    align: str = ">"         # ">" right (numbers) or "<" left (text)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A plain-text table, one line per row, columns sized to their widest cell."""
    cells = [[c.header for c in columns]]
    for row in rows:
        cells.append(["-" if row.get(c.key) is None else c.fmt.format(row[c.key]) for c in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for j, line in enumerate(cells):
        lines.append("  ".join(f"{cell:{c.align}{w}}" for cell, c, w in zip(line, columns, widths)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict_vs_hf(ratio: float | None, iqr: tuple[float, float] | None, matched: bool, target: float = 1.0) -> str:
    """One-line verdict for an "ours vs Hugging Face" row: ratio is HF time / our time (None: the baseline
    row itself); iqr the middle half of the per-round ratios; matched whether parameter counts agree."""
    if not matched:
        return "PARAM COUNTS DIFFER: not comparable"
    if ratio is None or iqr is None:
        return "baseline"
    if ratio >= target:
        return f"meets target ({ratio:.2f}x HF)"
    if iqr[1] >= target:
        return f"parity within noise ({ratio:.3f}x, rounds' IQR reaches {iqr[1]:.2f}x)"
    return f"BELOW target: {100 * (1 - ratio):.0f}% slower than HF"
