"""`archlab new-plugin`: the generated package (a token mixer and a plugin that is the decoder stack with it) is
complete and honours the contract; bad names and occupied folders are refused with nothing overwritten; and, end
to end, the package installs, is discovered, trains and sweeps through the CLI with its mixer's metrics in the
W&B records, and passes its own `pytest`. A deliberately broken pair (an import error, a mixer leaking the
future) is reported by `archlab plugins` and by the kit."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from framework import registry
from framework.cli import main as archlab_main
from framework.scaffold import new_plugin
from framework.scaffold.templates import files
from framework.testing import ContractViolation, check_plugin
from framework.wandb_records import read_runs

ARCHLAB = str(Path(sys.executable).parent / "archlab")
ENV = {**os.environ, "WANDB_MODE": "offline"}


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generated_package_is_complete(tmp_path):
    target = new_plugin("kitdemo", tmp_path / "pkg")
    tree = _tree(target)
    assert set(tree) == set(files("kitdemo"))
    meta = tomllib.loads(tree["pyproject.toml"])
    assert meta["project"]["entry-points"]["archlab.plugins"] == {"kitdemo": "archlab_kitdemo:PLUGIN"}
    assert meta["project"]["entry-points"]["archlab.mixers"] == {"kitdemo": "archlab_kitdemo.mixer:SPEC"}
    assert meta["tool"]["setuptools"]["package-data"]["archlab_kitdemo.conf"] == ["model/*.yaml"]
    # The plugin's own YAML is the generated defaults node (the stack's config) plus the mixer; the preset a hybrid.
    own = yaml.safe_load(tree["archlab_kitdemo/conf/model/kitdemo.yaml"])
    assert own == {"defaults": ["kitdemo_defaults", "_self_"], "mixer": "kitdemo"}
    hybrid = yaml.safe_load(tree["archlab_kitdemo/conf/model/kitdemo_hybrid.yaml"])
    assert hybrid == {"defaults": ["kitdemo", "_self_"], "layers": ["kitdemo", "attention"]}
    for rel, text in tree.items():
        if rel.endswith(".py"):
            compile(text, rel, "exec")  # every module is valid Python
    assert "parametrize_with_checks(\"kitdemo\")" in tree["tests/test_kitdemo.py"]
    # Built from the stack, not a copy of it: no model, block, norm or generate code of its own.
    assert "config_class=StackConfig" in tree["archlab_kitdemo/__init__.py"]
    assert "build=build_stack" in tree["archlab_kitdemo/__init__.py"]
    code = "".join(text for rel, text in tree.items() if rel.startswith("archlab_kitdemo/"))
    for own_copy in ("def generate", "make_norm", "LayerNorm", "class Block", "KVCache", "nn.Embedding"):
        assert own_copy not in code, own_copy


def test_generated_plugin_honours_the_contract_before_installing(tmp_path, monkeypatch):
    from framework.mixers import registry as mixers

    target = new_plugin("kitdemo2", tmp_path / "pkg")
    monkeypatch.syspath_prepend(str(target))
    package = importlib.import_module("archlab_kitdemo2")
    # What installing does through the archlab.mixers entry point: the mixer joins the registry.
    found = mixers.discover_mixers()
    with_mixer = mixers.MixerDiscovery({**found.mixers, "kitdemo2": package.SPEC}, found.errors)
    monkeypatch.setattr(mixers, "discover_mixers", lambda: with_mixer)
    report = check_plugin(package.PLUGIN)  # raises naming any violated property
    assert report.result("generate").status == "passed"
    assert report.result("metrics").status == "passed"
    preset = check_plugin(package.PLUGIN, model="kitdemo2_hybrid")
    assert preset.ok


@pytest.mark.parametrize("name,why", [
    ("9lives", "invalid plugin name"), ("My-Net", "invalid plugin name"), ("", "invalid plugin name"),
    ("class", "reserved"), ("framework", "reserved"), ("decoder", "already taken"), ("llama", "model=llama already exists"),
])
def test_bad_name_is_refused_and_nothing_written(tmp_path, capsys, name, why):
    assert archlab_main(["new-plugin", name, "--dir", str(tmp_path / "out")]) == 2
    assert why in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_occupied_folder_is_refused_and_left_untouched(tmp_path, capsys):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    (occupied / "pyproject.toml").write_text("[project]\nname = 'mine'\n")
    before = _tree(occupied)
    assert archlab_main(["new-plugin", "fresh", "--dir", str(occupied)]) == 2
    assert "is not empty; nothing was written" in capsys.readouterr().err
    assert _tree(occupied) == before
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert archlab_main(["new-plugin", "fresh", "--dir", str(a_file)]) == 2
    assert "is not a folder" in capsys.readouterr().err and a_file.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "occupied"]  # no staging folder left


def test_empty_folder_is_filled(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert archlab_main(["new-plugin", "fresh", "--dir", str(empty)]) == 0
    assert (empty / "archlab_fresh" / "mixer.py").is_file()
    assert "pip install -e" in capsys.readouterr().out


# ---- end to end: install, discover, train, sweep, pytest; broken plugins reported ----------------------------
def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", *args], check=True,
                   capture_output=True, timeout=300)


def _break(folder: Path, rel: str, old: str, new: str) -> None:
    path = folder / rel
    text = path.read_text()
    assert old in text, (rel, old)
    path.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory):
    """Three generated plugins, installed (non-editable): a good one, one whose mixer sees the future,
    one whose import fails. Names are unique per process so parallel runs do not collide."""
    work = tmp_path_factory.mktemp("scaffold")
    tag = os.getpid()
    names = {"good": f"scaf{tag}", "leaky": f"scaf{tag}_leaky", "broken": f"scaf{tag}_broken"}
    dirs = {kind: new_plugin(name, work / kind) for kind, name in names.items()}
    _break(dirs["leaky"], f"archlab_{names['leaky']}/mixer.py", "torch.cat([past, value], dim=1)",
           "torch.cat([value, past], dim=1)")  # output t sees inputs t .. t+K-1
    _break(dirs["broken"], f"archlab_{names['broken']}/__init__.py", "from framework import Plugin",
           "import archlab_dependency_that_does_not_exist  # noqa: F401\nfrom framework import Plugin")
    _pip("install", "--no-deps", "--no-build-isolation", *map(str, dirs.values()))
    registry.refresh()
    try:
        yield names, dirs, work
    finally:
        _pip("uninstall", "-y", *(f"archlab-{n.replace('_', '-')}" for n in names.values()))
        registry.refresh()


@pytest.mark.slow
def test_scaffolded_plugin_installs_trains_sweeps_and_passes_its_tests(scaffolded):
    names, dirs, work = scaffolded
    name = names["good"]
    assert name in registry.list_plugins()
    assert registry.discover().sources[name].startswith(f"archlab-scaf{os.getpid()} ")

    listed = subprocess.run([ARCHLAB, "plugins"], capture_output=True, text=True, timeout=120, env=ENV)
    assert listed.returncode == 0 and name in listed.stdout and f"{name}_hybrid" in listed.stdout

    run_dir = work / "run"
    trained = subprocess.run(
        [ARCHLAB, "train", f"model={name}", "data=synthetic", "debug=fast", "logger=csv", f"hydra.run.dir={run_dir}",
         "sample.prompt=null"], capture_output=True, text=True, timeout=300, env=ENV, cwd=work)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    sweep_dir = work / "sweep"
    swept = subprocess.run(
        [ARCHLAB, "train", "-m", f"model={name}", "model.ffn=mlp,swiglu", "data=synthetic", "debug=fast",
         "logger=wandb", "callbacks=none", f"hydra.sweep.dir={sweep_dir}", "sample.prompt=null"],
        capture_output=True, text=True, timeout=400, env=ENV, cwd=work)
    assert swept.returncode == 0, swept.stderr[-3000:]
    runs = read_runs(sweep_dir, wait_s=20)
    assert sorted(r.config["model"]["ffn"] for r in runs) == ["mlp", "swiglu"]
    for run in runs:
        keys = set(run.keys())
        assert {f"{name}/gate/layer0", f"{name}/gate/mean", f"{name}/past_share/mean"} <= keys, sorted(keys)
        assert "resid/rms/mean" in keys  # the stack's shared statistics
        assert "val/loss" in keys and run.finished

    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(dirs["good"])],
                            capture_output=True, text=True, timeout=300, env=ENV, cwd=dirs["good"])
    assert tested.returncode == 0, tested.stdout[-3000:]
    assert " passed" in tested.stdout and "failed" not in tested.stdout


@pytest.mark.slow
def test_broken_scaffolded_plugins_are_reported(scaffolded):
    names, dirs, _ = scaffolded
    listed = subprocess.run([ARCHLAB, "plugins"], capture_output=True, text=True, timeout=120, env=ENV)
    broken_section = listed.stdout.split("broken plugins", 1)[-1]
    assert names["broken"] in broken_section and "archlab_dependency_that_does_not_exist" in broken_section
    with pytest.raises(ContractViolation, match="loads: .*archlab_dependency_that_does_not_exist"):
        check_plugin(names["broken"])

    with pytest.raises(ContractViolation) as caught:
        check_plugin(names["leaky"])
    assert caught.value.report.violated == ["causality"]
    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(dirs["leaky"])],
                            capture_output=True, text=True, timeout=300, env=ENV, cwd=dirs["leaky"])
    assert tested.returncode == 1
    assert "violates causality" in tested.stdout and "future tokens leak into the past" in tested.stdout
