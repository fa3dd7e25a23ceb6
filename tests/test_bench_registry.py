"""``archlab bench`` finds its benchmarks through the ``archlab.benchmarks`` entry-point group only: the names
installed there are the names it accepts, an unknown name exits 2 listing them, and a broken entry fails alone."""
from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint, entry_points

import pytest

import framework.bench as bench
from framework.bench import ENTRY_POINT_GROUP, benchmarks, load_benchmark, run_bench

BUILTIN = {"context", "decode", "decoder", "encoders", "infer", "mixers", "moe", "overhead", "rnn", "sparse"}


def test_installed_entry_points_are_the_accepted_names() -> None:
    installed = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert set(installed) == BUILTIN
    assert benchmarks() == dict(sorted(installed.items()))
    # the core registers only its generic benchmark; every model-specific one lives in a plugin
    assert [name for name, value in installed.items() if value.startswith("framework.")] == ["overhead"]
    assert all(value.startswith("plugins.") for name, value in installed.items() if name != "overhead")
    for name in installed:
        assert callable(load_benchmark(name)), name


@pytest.mark.parametrize("argv", [["no-such-bench"], []])
def test_unknown_or_missing_name_exits_2_naming_the_known_ones(argv, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_bench(argv) == 2
    err = capsys.readouterr().err
    listed = err.split("choose one of: ", 1)[1].splitlines()[0].split(", ")
    assert listed == sorted(BUILTIN)
    assert ("no-such-bench" in err) == bool(argv)


def test_cli_dispatches_bench_through_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from framework.cli import main

    assert main(["bench", "no-such-bench"]) == 2
    assert "choose one of: context, decode, decoder, encoders, infer, mixers, moe, overhead, rnn, sparse" in capsys.readouterr().err


@pytest.fixture
def fake_group(monkeypatch: pytest.MonkeyPatch):
    """The entry-point group replaced by fakes: a module, a callable, three broken entries, a duplicate."""
    calls: list[list[str]] = []
    module = types.ModuleType("_archlab_fake_bench")
    module.main = lambda argv: calls.append(list(argv)) or 7
    module.as_callable = lambda argv: calls.append(["callable", *argv])  # None: exit 0
    module.not_callable = 42
    monkeypatch.setitem(sys.modules, "_archlab_fake_bench", module)
    fakes = [
        EntryPoint("mod", "_archlab_fake_bench", ENTRY_POINT_GROUP),
        EntryPoint("fn", "_archlab_fake_bench:as_callable", ENTRY_POINT_GROUP),
        EntryPoint("missing", "_archlab_no_such_module", ENTRY_POINT_GROUP),
        EntryPoint("number", "_archlab_fake_bench:not_callable", ENTRY_POINT_GROUP),
        EntryPoint("nomain", "types", ENTRY_POINT_GROUP),
        EntryPoint("twice", "_archlab_fake_bench", ENTRY_POINT_GROUP),
        EntryPoint("twice", "_archlab_fake_bench:as_callable", ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(bench, "entry_points", lambda group: [ep for ep in fakes if ep.group == group])
    monkeypatch.setattr(bench, "retain_freed_memory", lambda: None)
    bench.refresh()
    yield calls
    bench.discover.cache_clear()  # the next caller reads the real group again


def test_dispatch_to_a_module_or_a_callable(fake_group: list[list[str]]) -> None:
    assert run_bench(["mod", "--steps", "1"]) == 7
    assert run_bench(["fn", "x"]) == 0
    assert fake_group == [["--steps", "1"], ["callable", "x"]]


@pytest.mark.parametrize("name, why", [
    ("missing", "failed to import _archlab_no_such_module: ModuleNotFoundError"),
    ("number", "is a int, not a module or a callable main(argv)"),
    ("nomain", "module types has no main(argv)"),
    ("twice", "registered twice: _archlab_fake_bench, _archlab_fake_bench:as_callable"),
])
def test_a_broken_benchmark_fails_alone(name: str, why: str, fake_group: list[list[str]],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert run_bench([name]) == 1
    assert why in capsys.readouterr().err
    assert run_bench(["mod"]) == 7  # the others still run
    assert run_bench([]) == 2
    err = capsys.readouterr().err
    assert "choose one of: fn, missing, mod, nomain, number\n" in err  # broken on import: found only when run
    assert "broken: twice: registered twice" in err
