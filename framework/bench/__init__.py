"""``archlab bench <name>``: benchmarks print a table and ratios against a baseline measured in the same run."""
from __future__ import annotations

import importlib
import sys

from framework.cpu_memory import retain_freed_memory

BENCHMARKS = {"sparse": "framework.bench.sparse", "decoder": "framework.bench.decoder", "encoders": "framework.bench.encoders", "moe": "framework.bench.moe", "rnn": "framework.bench.rnn",
              "overhead": "framework.bench.overhead"}


def run_bench(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(f"archlab bench: choose one of: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    retain_freed_memory()  # as training does: no page faults from freed activations skewing the timings
    module = importlib.import_module(BENCHMARKS[argv[0]])
    return int(module.main(argv[1:]) or 0)
