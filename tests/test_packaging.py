"""A non-editable install, run from another directory, finds its Hydra configs and plugins."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_ships_configs_and_trains_from_elsewhere(tmp_path):
    # Build from a clean copy so no stale build/ folder leaks into (or out of) the source tree.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "outputs", "multirun", "build", "wandb", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    shipped = {p.relative_to(target).as_posix() for p in target.rglob("*.yaml")}
    assert {"conf/train.yaml", "conf/data/shakespeare.yaml", "plugins/decoder/conf/model/llama.yaml"} <= shipped
    # Every config of the tree, at any depth (conf/study/<study>/<group>/*.yaml is four levels down).
    assert {p.relative_to(REPO).as_posix() for d in ("conf", "plugins") for p in (REPO / d).rglob("*.yaml")} <= shipped
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Only the installed copy (not the source tree) is importable: PYTHONPATH first, cwd elsewhere.
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "offline"}
    probe = subprocess.run([sys.executable, "-c", "import framework, conf; print(framework.__file__, conf.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert str(REPO) not in probe.stdout and str(target) in probe.stdout
    out = subprocess.run(
        [sys.executable, "-m", "framework.cli", "train", "model=llama", "data=synthetic", "debug=fast", "logger=csv",
         "callbacks=none", "sample.prompt=null"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert list((elsewhere / "outputs" / "train" / "runs").iterdir())
