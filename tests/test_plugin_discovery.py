"""Plugins are found through entry points only: a real third-party package installed at test time
shows up, trains via model=<name>, and a broken one is reported without breaking the others."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from framework import registry

FIXTURES = Path(__file__).parent / "fixtures"
ARCHLAB = str(Path(sys.executable).parent / "archlab")


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", *args], check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    work = tmp_path_factory.mktemp("plugins")
    for name in ("toy_plugin", "broken_plugin"):
        shutil.copytree(FIXTURES / name, work / name)
        _pip("install", "--no-deps", "--no-build-isolation", str(work / name))
    registry.refresh()
    yield
    _pip("uninstall", "-y", "archlab-toy-plugin", "archlab-broken-plugin")
    registry.refresh()


def test_builtin_decoder_comes_from_an_entry_point():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="archlab.plugins")}
    assert names.get("decoder") == "plugins.decoder:PLUGIN"
    assert "decoder" in registry.list_plugins()


def test_builtin_mixers_come_from_entry_points():
    from importlib.metadata import entry_points

    from framework.mixers import list_mixers

    names = {ep.name for ep in entry_points(group="archlab.mixers")}
    assert {"attention", "longformer", "lstm", "gru", "elman", "mamba", "mamba2", "rglru", "mlp", "swiglu", "moe", "none"} <= names
    assert set(list_mixers()) == names


def test_third_party_plugin_is_discovered_and_broken_one_reported(installed_plugins):
    plugins = registry.list_plugins()
    assert "toy" in plugins and "decoder" in plugins
    errors = registry.plugin_errors()
    assert "broken" in errors and "archlab_dependency_that_does_not_exist" in errors["broken"]
    model = registry.build_model("toy", mix=0.25)
    assert model.cfg.mix == 0.25
    with pytest.raises(ValueError, match="mix"):
        registry.build_model("toy", mix=2.0)
    with pytest.raises(ValueError, match="broken"):
        registry.get_plugin("broken")


def test_cli_lists_plugins_and_reports_the_broken_one(installed_plugins):
    out = subprocess.run([ARCHLAB, "plugins"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "toy" in out.stdout and "decoder" in out.stdout and "llama" in out.stdout
    assert "broken" in out.stdout and "archlab_dependency_that_does_not_exist" in out.stdout


def test_cli_trains_the_third_party_plugin(installed_plugins, tmp_path):
    out = subprocess.run(
        [ARCHLAB, "train", "model=toy", "data=synthetic", "debug=fast", "logger=csv",
         f"hydra.run.dir={tmp_path}", "sample.prompt=null"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    metrics = (tmp_path / "csv").rglob("metrics.csv")
    text = "".join(p.read_text() for p in metrics)
    assert "toy/hidden_norm" in text and "val/loss" in text


def test_unknown_or_broken_model_fails_early_listing_choices(installed_plugins, tmp_path):
    out = subprocess.run([ARCHLAB, "train", "model=nosuch", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "model=nosuch" in out.stderr and "gpt" in out.stderr and "toy" in out.stderr
    out = subprocess.run([ARCHLAB, "train", "model=broken", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "broken" in out.stderr and "archlab_dependency_that_does_not_exist" in out.stderr
    assert not any(tmp_path.iterdir()), "nothing may be written for a rejected run"
