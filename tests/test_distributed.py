"""More than one process (framework/distributed, docs/distributed.md): each rank reads its own slice of every global
batch; the other ranks are started from the job's config, never from ``sys.argv`` (so ``-m`` sweeps run each job
once); 1 process and ``trainer=ddp_cpu`` (2 processes x half the batch) give the same loss curve."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from framework.config_schema import ConfigError
from framework.data.loaders import ResumableBatches, check_shard, eval_loader, shuffled_batches
from framework.distributed.launcher import CONFIG_NAME, JobLauncher
from framework.train import train
from framework.wandb_records import find_runs, read_run
from hydra_compose import compose_train

ARCHLAB = str(Path(sys.executable).parent / "archlab")


def test_ranks_split_every_global_batch_into_contiguous_slices() -> None:
    epoch = shuffled_batches(40, 8, seed=3)
    whole = list(ResumableBatches(epoch, 5))
    halves = [list(ResumableBatches(epoch, 5, shard=(r, 2))) for r in range(2)]
    assert [a + b for a, b in zip(*halves)] == whole  # rank 0 then rank 1 is the one-process batch
    assert all(len(b) == 4 for h in halves for b in h)
    with pytest.raises(ConfigError, match="data.batch_size: 6 is the global batch.*4 processes"):
        check_shard(6, (0, 4))


def test_validation_rows_are_split_without_padding_or_overlap() -> None:
    data = torch.utils.data.TensorDataset(torch.arange(11))
    seen = [int(x) for r in range(3) for (batch,) in eval_loader(data, 4, 0, shard=(r, 3)) for x in batch]
    assert seen == list(range(11))


class _Environment:  # a cluster environment as Lightning's launcher reads it, for rank 0 of 2 on one node
    creates_processes_externally = False
    main_address, main_port = "127.0.0.1", 29999

    def node_rank(self) -> int:
        return 0

    def local_rank(self) -> int:
        return 0

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        pass


def test_other_ranks_start_from_the_job_config_not_the_sweep_command_line(tmp_path, monkeypatch) -> None:
    """Under ``archlab train -m model=gpt,llama`` Lightning's own launcher would re-run that command (the sweep) in
    every rank; ours writes the job's resolved config and starts each rank on it, then gives the parent its
    environment back so the sweep's next job launches its own ranks."""
    started: list[tuple[list[str], dict]] = []

    class FakeProcess:
        def __init__(self, command: list[str], env: dict) -> None:
            started.append((command, env))

        def wait(self, timeout: float | None = None) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakeProcess)
    import lightning.pytorch.strategies.launchers.subprocess_script as lightning_launcher

    monkeypatch.setattr(lightning_launcher, "_launch_process_observer", lambda procs: None)
    monkeypatch.setattr(sys, "argv", ["archlab", "train", "-m", "model=gpt,llama"])
    for key in ("LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    cfg = compose_train(["model=llama", "optimizer.lr=0.003"], tmp_path)
    launcher = JobLauncher(_Environment(), num_processes=2, num_nodes=1)
    launcher.job_config = cfg
    assert launcher.launch(lambda: "fit done") == "fit done"
    (command, env), = started
    assert command == [sys.executable, "-m", "framework.distributed.rank", str(tmp_path / CONFIG_NAME)]
    assert (env["LOCAL_RANK"], env["WORLD_SIZE"], env["MASTER_PORT"]) == ("1", "2", "29999")
    written = OmegaConf.load(tmp_path / CONFIG_NAME)
    assert written.optimizer.lr == 0.003 and written.model.position == "rope"
    assert OmegaConf.is_missing(written, "seed") is False and "${" not in OmegaConf.to_yaml(written)
    assert os.environ["LOCAL_RANK"] == "0"  # during the job, rank 0 knows it is rank 0 ...
    launcher.end_job()
    assert "LOCAL_RANK" not in os.environ and "WORLD_SIZE" not in os.environ  # ... and after it, a fresh process


def test_a_second_rank_needs_the_job_config() -> None:
    launcher = JobLauncher(_Environment(), num_processes=2, num_nodes=1)
    with pytest.raises(RuntimeError, match="no job config"):
        launcher.launch(lambda: None)


COMMON = ["data=synthetic", "data.n_train=2000", "data.n_val=64", "data.batch_size=8", "trainer.max_steps=50",
          "trainer.val_check_interval=50", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
          "model.n_layers=2", "model.d_model=32", "model.n_heads=2", "sample.prompt=null",
          "plugin_metrics_every_n_steps=1"]


def _curve(run_dir: Path, key: str) -> dict[int, float]:
    (path,) = find_runs(run_dir)
    return dict(read_run(path, wait_s=20).series(key, step_key="trainer/global_step"))


@pytest.mark.slow
def test_multirun_ddp_runs_each_job_once_with_the_one_process_loss_curve(tmp_path) -> None:
    """``archlab train -m trainer=ddp_cpu model=gpt,moe``: exactly 2 jobs, 2 job directories, 2 W&B runs (rank 0's),
    each job 2 processes; every step's train/loss (and the MoE balance loss, computed from the global batch's
    expert counts and probabilities) equals the 1-process run's to 1e-5 over 50 fp32 steps."""
    sweep = tmp_path / "sweep"
    out = subprocess.run([ARCHLAB, "train", "-m", "trainer=ddp_cpu", "model=gpt,moe", *COMMON,
                          f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "WANDB_MODE": "offline"})
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1"]
    assert len(find_runs(sweep)) == 2
    for job in jobs:  # each job started its own 2 ranks, once
        assert (job / "train.log").read_text().count("Starting with 2 processes") == 1
    assert (out.stdout + out.stderr).count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2  # one rank 1 per job, no more
    leftover = subprocess.run(["pgrep", "-f", f"framework.distributed.rank {sweep}"], capture_output=True, text=True)
    assert leftover.stdout == ""
    for preset, job in zip(["gpt", "moe"], jobs):
        assert (job / "checkpoints" / "last.ckpt").is_file()
        train(compose_train([f"model={preset}", *COMMON, "logger=wandb"], tmp_path / f"one_{preset}"))
        keys = ["train/loss"] + (["train/moe/balance_loss/mean", "train/moe/load_max/mean"] if preset == "moe" else [])
        for key in keys:
            one, two = _curve(tmp_path / f"one_{preset}", key), _curve(job, key)
            assert len(one) == 50 and one.keys() == two.keys(), key
            assert max(abs(one[s] - two[s]) for s in one) < 1e-5, key
        assert abs(_curve(tmp_path / f"one_{preset}", "val/loss")[49] - _curve(job, "val/loss")[49]) < 1e-5


@pytest.mark.slow
def test_fsdp_on_cpu_matches_one_process_and_its_checkpoint_loads_in_one(tmp_path) -> None:
    """``trainer=fsdp_cpu`` (FSDP2 through ModelParallelStrategy, 2 processes): the 1-process loss curve to 1e-5, and
    its checkpoint is one ordinary file that a single process loads, evaluates and generates from."""
    from framework.checkpoint import load_checkpoint

    steps = ["trainer.max_steps=20", "trainer.val_check_interval=20"]
    out = subprocess.run([ARCHLAB, "train", "trainer=fsdp_cpu", "model=llama", *COMMON, *steps,
                          f"hydra.run.dir={tmp_path / 'fsdp'}"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "WANDB_MODE": "offline"})
    assert out.returncode == 0, out.stderr[-3000:]
    train(compose_train(["model=llama", *COMMON, *steps, "logger=wandb"], tmp_path / "one"))
    one, two = _curve(tmp_path / "one", "train/loss"), _curve(tmp_path / "fsdp", "train/loss")
    assert len(one) == 20 and one.keys() == two.keys()
    assert max(abs(one[s] - two[s]) for s in one) < 1e-5
    model, hparams = load_checkpoint(tmp_path / "fsdp" / "checkpoints" / "last.ckpt")
    reference, _ = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.ckpt")
    for key, value in reference.state_dict().items():
        assert torch.allclose(model.state_dict()[key], value, atol=1e-5), key
    prompt = torch.tensor([[2, 3, 4]])
    assert torch.equal(model.generate(prompt, 5, temperature=0), reference.generate(prompt, 5, temperature=0))
