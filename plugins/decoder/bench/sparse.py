"""``archlab bench sparse``: forward+backward time and peak memory of each sparse attention pattern,
as ratios against dense causal ``scaled_dot_product_attention`` at the same shapes, measured in the same run.

Registered as the ``sparse`` entry of the ``archlab.benchmarks`` entry-point group, by the decoder plugin
whose sparse presets (longformer, bigbird, sparse_transformer, reformer, ...) run these kernels
(``framework.nn.sparse``); the memory children run ``python -m plugins.decoder.bench.sparse --child ...``.

Time: every pattern at a length is timed interleaved with the dense baseline (rotating order, medians,
per-round paired ratios), so load on a shared machine cancels out of the ratio.
``--device cuda`` times on a GPU and ``--kernels auto,flex,math`` compares the sparse kernels there (auto is
FlexAttention on CUDA; on CPU flex has no backward, so CPU rows use auto = flash_cpu or math); GPU memory is the
rise of ``torch.cuda.max_memory_allocated`` over one fwd+bwd, in this process.
Peak memory (CPU): each (pattern, length) runs once in a fresh subprocess; the figure is the rise of the
process's peak resident set (VmHWM, reset through /proc/self/clear_refs just before the call, since a
forked child starts with its parent's mark) over its resident set just before the call,
i.e. everything the call allocated at its high point: activations saved for backward, gradients,
working buffers (inputs q, k, v are allocated before and excluded; a short warm-up run first takes the
one-off allocations of thread pools and kernels out of the figure). The dense masked score matrix is
not run at long lengths (4 GiB at 16k); its size is given analytically: one fp32 (B, H, T, T) tensor.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from framework.bench.common import (Column, crossover_length, describe_device, format_table, paired_ratio,
                                    time_interleaved)

PATTERNS = ("sliding_window", "longformer", "bigbird", "strided", "fixed", "lsh")
DEFAULT_LENGTHS = (1024, 4096, 16384, 32768)


def _attention_fn(kind: str, t: int, heads: int, head_dim: int, window: int, block: int,
                  kernel: str = "auto", device: torch.device = torch.device("cpu")) -> Callable:
    """fn(q, k, v) -> out for one kind; shapes (1, H, T, D)."""
    from framework.nn.sparse import SparseAttentionConfig, block_sparse_attention, build_patterns
    from framework.nn.sparse.lsh import lsh_attention, make_rotations

    if kind == "dense":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    cfg = SparseAttentionConfig(window=window, block_size=block, n_global=block, n_random=2,
                                stride=window, n_summary=max(1, window // 16), chunk_size=block,
                                n_buckets=max(2, 2 * (t // (2 * block))), n_hashes=2)
    if kind == "lsh":
        rot = make_rotations(head_dim, cfg.n_buckets, cfg.n_hashes, 0)
        return lambda q, k, v: lsh_attention(q, v, rot, cfg.chunk_size, True)[0]
    groups = build_patterns(kind, cfg, 0, heads, True, t)
    for _, _, pattern in groups:
        pattern.layout(t, device)  # built once per length, outside the timing (the model caches it too)

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if len(groups) == 1:
            return block_sparse_attention(q, k, v, groups[0][2], kernel=kernel)
        sizes = [h1 - h0 for h0, h1, _ in groups]  # as the model does: one split, not slices
        parts = zip(q.split(sizes, 1), k.split(sizes, 1), v.split(sizes, 1))
        return torch.cat([block_sparse_attention(*qkv, p, kernel=kernel) for (_, _, p), qkv in zip(groups, parts)], 1)

    return fn


def _inputs(t: int, heads: int, head_dim: int, device: torch.device = torch.device("cpu")) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, heads, t, head_dim, generator=g).to(device).requires_grad_() for _ in range(3)]


def _step(fn: Callable, qkv: list[torch.Tensor]) -> None:
    for x in qkv:
        x.grad = None
    fn(*qkv).sum().backward()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _reset_peak() -> bool:
    """Reset this process's peak-RSS mark (Linux: ``5`` to /proc/self/clear_refs). Needed because a
    forked child inherits its parent's high-water mark, which would swamp the figure."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(kind: str, t: int, heads: int, head_dim: int, window: int, block: int, kernel: str = "auto") -> None:
    """Run one fwd+bwd in this (fresh) process and print the peak-RSS rise in bytes.

    Runs with glibc's default malloc thresholds (no ``framework.cpu_memory.retain_freed_memory``, which
    ``archlab bench`` applies to the parent): memory the warm-up freed and kept would be reused without
    raising the peak, and the figure would read low."""
    # Warm up at a short length first: thread pools, kernels and autograd allocate once on first use.
    short = min(t, 4 * max(block, 64))
    _step(_attention_fn(kind, short, heads, head_dim, window, block, kernel), _inputs(short, heads, head_dim))
    fn = _attention_fn(kind, t, heads, head_dim, window, block, kernel)
    qkv = _inputs(t, heads, head_dim)
    if not _reset_peak():
        print(json.dumps({"peak_bytes": None}))
        return
    before = _rss_bytes()
    _step(fn, qkv)
    print(json.dumps({"peak_bytes": max(_peak_rss_bytes() - before, 0)}))


def cuda_peak_memory(fn: Callable, qkv: list[torch.Tensor]) -> int:
    """Rise of the CUDA allocator's peak over one fwd+bwd (inputs allocated before, excluded)."""
    device = qkv[0].device
    _step(fn, qkv)  # compiles (FlexAttention) and warms the allocator outside the figure
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    _step(fn, qkv)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def peak_memory(kind: str, t: int, heads: int, head_dim: int, window: int, block: int,
                kernel: str = "auto") -> int | None:
    cmd = [sys.executable, "-m", "plugins.decoder.bench.sparse", "--child", kind, str(t), str(heads), str(head_dim),
           str(window), str(block), kernel, "--threads", str(torch.get_num_threads())]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return None
    peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]
    return None if peak is None else int(peak)


def run(
    lengths: tuple[int, ...] = (256, 512),
    patterns: tuple[str, ...] = PATTERNS,
    heads: int = 4,
    head_dim: int = 64,
    window: int = 64,
    block: int = 32,
    rounds: int = 2,
    memory: bool = False,
    device: torch.device = torch.device("cpu"),
    kernels: tuple[str, ...] = ("auto",),
) -> list[dict[str, Any]]:
    """One row per (length, pattern, kernel): median seconds, speed-up vs dense SDPA, memory ratios."""
    rows: list[dict[str, Any]] = []
    cases = [(kind, kernel) for kind in patterns for kernel in (("auto",) if kind == "lsh" else kernels)]
    for t in lengths:
        qkv = _inputs(t, heads, head_dim, device)
        fns = {"dense": _attention_fn("dense", t, heads, head_dim, window, block, device=device)}
        fns.update({f"{kind}/{kernel}": _attention_fn(kind, t, heads, head_dim, window, block, kernel, device)
                    for kind, kernel in cases})
        n_rounds = rounds if t <= 4096 else max(1, rounds - 1)
        timings = time_interleaved({k: (lambda f=f: _step(f, qkv)) for k, f in fns.items()}, device, n_rounds)

        def mem_of(name: str, kind: str, kernel: str = "auto") -> int | None:
            if not memory:
                return None
            if device.type == "cuda":
                return cuda_peak_memory(fns[name], qkv)
            return peak_memory(kind, t, heads, head_dim, window, block, kernel)

        dense_mem = mem_of("dense", "dense")
        score_matrix = heads * t * t * 4  # one fp32 (1, H, T, T) score matrix
        for kind, kernel in cases:
            name = f"{kind}/{kernel}"
            mem = mem_of(name, kind, kernel)
            rows.append({
                "t": t, "pattern": kind, "kernel": kernel,
                "dense_s": timings["dense"].median, "sparse_s": timings[name].median,
                "speedup": paired_ratio(timings["dense"], timings[name]),
                "mem_mb": None if mem is None else mem / 2**20,
                "dense_mem_mb": None if dense_mem is None else dense_mem / 2**20,
                "mem_vs_sdpa": None if (mem is None or not dense_mem) else mem / dense_mem,
                "below_scores": None if not mem else score_matrix / mem,
            })
    for case in cases:
        mine = [r for r in rows if (r["pattern"], r["kernel"]) == case]
        cross = crossover_length([(r["t"], r["speedup"]) for r in mine])
        for r in mine:
            r["crossover"] = cross
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="archlab bench sparse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(DEFAULT_LENGTHS))
    parser.add_argument("--patterns", nargs="+", default=list(PATTERNS), choices=PATTERNS)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant (one fewer above 4k)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--kernels", default="auto", help="comma-separated sparse kernels: auto, flash_cpu, flex, math")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-case peak-memory subprocesses")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        kind, *nums, kernel = args.child
        _child(kind, *map(int, nums), kernel)
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    kernels = tuple(args.kernels.split(","))
    bad = [k for k in kernels if k not in ("auto", "flash_cpu", "flex", "math")]
    if bad or (device.type == "cpu" and "flex" in kernels):
        parser.error(f"--kernels: {', '.join(bad) or 'flex'} not allowed here; allowed: auto, flash_cpu, math"
                     + (", flex" if device.type == "cuda" else " (flex trains on CUDA only)"))
    # 32k only when a dense score-free run of it fits comfortably: skip it on small-memory machines.
    lengths = tuple(t for t in args.lengths if t < 32768 or device.type == "cuda" or _fits(t, args.heads))
    print(f"# archlab bench sparse: causal attention fwd+bwd, B=1 H={args.heads} D={args.head_dim} fp32, "
          f"window {args.window}, block {args.block}, {describe_device(device)}")
    print("# speed-up = dense SDPA time / pattern time (median of per-round paired ratios); memory = peak RSS rise "
          "of one fwd+bwd in a fresh subprocess; x_below_scores = one fp32 (H, T, T) score matrix / pattern peak")
    rows = run(lengths, tuple(args.patterns), args.heads, args.head_dim, args.window, args.block, args.rounds,
               memory=not args.no_memory, device=device, kernels=kernels)
    print(format_table(rows, [
        Column("t", "T"), Column("pattern", "pattern", align="<"), Column("kernel", "kernel", align="<"),
        Column("dense_s", "sdpa s", "{:.3f}"), Column("sparse_s", "sparse s", "{:.3f}"),
        Column("speedup", "speed-up", "{:.2f}x"),
        Column("dense_mem_mb", "sdpa MB", "{:.0f}"), Column("mem_mb", "sparse MB", "{:.0f}"),
        Column("mem_vs_sdpa", "mem/sdpa", "{:.2f}"), Column("below_scores", "x_below_scores", "{:.1f}"),
        Column("crossover", "crossover T", align="<"),
    ]))
    return 0


def _fits(t: int, heads: int) -> bool:
    """32k needs a few GiB of working memory at most; require 8 GiB available."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) for line in f}
        return info.get("MemAvailable", 0) * 1024 > 8 * 2**30
    except OSError:
        return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
