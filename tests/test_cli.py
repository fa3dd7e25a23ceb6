"""The `archlab` command as a user runs it: train (default data), generate from the checkpoint, and
clear one-line errors (exit code 2, no stack trace) for bad input."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ARCHLAB = str(Path(sys.executable).parent / "archlab")
ENV = {**os.environ, "WANDB_MODE": "offline"}


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([ARCHLAB, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    out = run("train", "debug=fast", "logger=csv", f"hydra.run.dir={run_dir}", "sample.max_new_tokens=12")
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


def test_train_writes_checkpoint_config_and_sample(trained_run):
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert (trained_run / ".hydra" / "config.yaml").is_file()
    log = (trained_run / "train.log").read_text()
    assert "sample:" in log


def test_generate_from_checkpoint_is_reproducible(trained_run):
    ckpt = str(trained_run / "checkpoints" / "last.ckpt")
    a = run("generate", f"ckpt={ckpt}", "prompt=ROMEO:", "max_new_tokens=20", "temperature=0")
    b = run("generate", f"ckpt={ckpt}", "prompt=ROMEO:", "max_new_tokens=20", "temperature=0")
    assert a.returncode == 0, a.stderr[-2000:]
    assert a.stdout.startswith("ROMEO:") and a.stdout == b.stdout
    assert len(a.stdout.encode()) >= len("ROMEO:") + 1


@pytest.mark.parametrize(
    "args, field",
    [
        (("generate", "ckpt=/nonexistent.ckpt"), "ckpt"),
        (("generate", "ckpt=x.ckpt", "temperature=hot"), "temperature"),
        (("train", "data=text"), "data.paths"),
        (("train", "model.d_model=30"), "d_model"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, args, field):
    extra = (f"hydra.run.dir={tmp_path}",) if args[0] == "train" else ()
    out = run(*args, *extra)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert field in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "checkpoints").exists()
