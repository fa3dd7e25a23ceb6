"""`archlab train -m` sweeps: one W&B run per job, each with its full resolved config, a group and
tags naming the sweep, and the core's and the plugin's metrics — read back from the offline files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from framework.wandb_records import read_runs

ARCHLAB = str(Path(sys.executable).parent / "archlab")


@pytest.mark.slow
def test_two_by_two_sweep_writes_four_readable_wandb_runs(tmp_path):
    out = subprocess.run(
        [ARCHLAB, "train", "-m", "model=gpt,llama", "optimizer.lr=1e-3,3e-3", "data=synthetic", "debug=fast",
         "logger=wandb", "callbacks=none", f"hydra.sweep.dir={tmp_path}", "sample.prompt=null"],
        capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "WANDB_MODE": "offline"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    runs = read_runs(tmp_path, wait_s=20)
    assert len(runs) == 4
    combos = {(r.config["model"]["position"], r.config["optimizer"]["lr"]) for r in runs}
    assert combos == {("learned", 1e-3), ("learned", 3e-3), ("rope", 1e-3), ("rope", 3e-3)}
    groups = {r.group for r in runs}
    assert len(groups) == 1 and tmp_path.name in groups.pop()
    for run in runs:
        # The full resolved config: every group is there, interpolations resolved.
        for key in ("model", "data", "optimizer", "scheduler", "trainer", "seed"):
            assert key in run.config
        assert run.config["model"]["vocab_size"] == run.config["data"]["vocab_size"]
        assert any(t.startswith("sweep:") for t in run.tags)
        assert any(t.startswith("model=") for t in run.tags) and any(t.startswith("optimizer.lr=") for t in run.tags)
        keys = set(run.keys())
        for key in ("train/loss", "val/loss", "val/acc", "val/ppl", "train/lr", "perf/tokens_per_sec",
                    "model/params", "resid/rms/mean"):
            assert key in keys, (key, sorted(keys))
        assert run.finished
