"""``archlab bench <name>``: benchmarks print a table and ratios against a baseline measured in the same run.

Benchmarks are found like plugins: through the ``archlab.benchmarks`` entry-point group, read once per
process. An entry point names a module with a ``main(argv) -> int | None`` function, or such a callable
itself (``name = "pkg.module"`` or ``name = "pkg.module:main"``). The core registers only ``overhead``
(``framework/bench/overhead.py``, generic: it composes the default config); the benchmarks of a model live
in its plugin. Only the chosen benchmark is imported, so a broken one fails alone, with its error, when it
is run; ``common.py`` holds the timing and table helpers they share.
"""
from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

from framework.cpu_memory import retain_freed_memory

ENTRY_POINT_GROUP = "archlab.benchmarks"

Main = Callable[[list[str]], "int | None"]  # a benchmark's main(argv); None means 0


@dataclass(frozen=True)
class BenchDiscovery:
    entries: dict[str, EntryPoint]  # benchmark name -> its entry point (not loaded yet)
    errors: dict[str, str]          # entry-point name -> why it is unusable (found without loading)


@lru_cache(maxsize=1)
def discover() -> BenchDiscovery:
    """The ``archlab.benchmarks`` entry points by name; a name registered twice is an error, not a guess."""
    entries: dict[str, EntryPoint] = {}
    errors: dict[str, str] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in errors:
            errors[ep.name] += f", {ep.value}"
        elif ep.name in entries and entries[ep.name].value != ep.value:
            errors[ep.name] = f"registered twice: {entries.pop(ep.name).value}, {ep.value}"
        else:
            entries[ep.name] = ep
    return BenchDiscovery(entries, errors)


def refresh() -> BenchDiscovery:
    """Forget the cached discovery (after installing a benchmark at run time)."""
    discover.cache_clear()
    return discover()


def benchmarks() -> dict[str, str]:
    """Runnable benchmark names -> the module (or ``module:callable``) each entry point names, sorted by name."""
    return {name: ep.value for name, ep in discover().entries.items()}


def load_benchmark(name: str) -> Main:
    """The ``main(argv)`` of benchmark ``name``; ``ValueError`` (saying why) for unknown or broken ones."""
    found = discover()
    if name in found.errors:
        raise ValueError(f"benchmark {name!r} is broken: {found.errors[name]}")
    if name not in found.entries:
        raise ValueError(f"unknown benchmark {name!r}; choose one of: {', '.join(found.entries) or '(none)'}")
    ep = found.entries[name]
    try:
        obj = ep.load()
    except Exception as err:  # any import-time failure of a (third-party) benchmark
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        raise ValueError(f"benchmark {name!r} is broken: failed to import {ep.value}: {last}") from err
    main = getattr(obj, "main", None) if isinstance(obj, ModuleType) else obj
    if not callable(main):
        what = f"module {ep.value} has no main(argv)" if isinstance(obj, ModuleType) else \
            f"{ep.value} is a {type(obj).__name__}, not a module or a callable main(argv)"
        raise ValueError(f"benchmark {name!r} is broken: {what}")
    return main


def _choose_one_of() -> str:
    found = discover()
    text = f"archlab bench: choose one of: {', '.join(found.entries) or '(none installed)'}"
    for name, why in found.errors.items():
        text += f"\n  broken: {name}: {why}"
    return text


def run_bench(argv: list[str]) -> int:
    """``archlab bench <name> [args]``: 2 (and the known names) for a missing or unknown name, 1 for a broken one."""
    found = discover()
    if not argv or (argv[0] not in found.entries and argv[0] not in found.errors):
        unknown = f"archlab bench: unknown benchmark {argv[0]!r}\n" if argv else ""
        print(unknown + _choose_one_of(), file=sys.stderr)
        return 2
    try:
        main = load_benchmark(argv[0])
    except ValueError as err:
        print(f"archlab bench: {err}", file=sys.stderr)
        return 1
    retain_freed_memory()  # as training does: no page faults from freed activations skewing the timings
    return int(main(argv[1:]) or 0)
