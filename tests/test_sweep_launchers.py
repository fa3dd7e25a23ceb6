"""Sweeps beyond the basic launcher (docs/sweeps.md): SLURM/submitit and joblib launchers, Optuna search, the
sweep table when jobs run in other processes, and a pre-empted submitit job requeued with resume=true."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_module

from framework.cli.sweep_results import RESULT_FILE, JobResult
from framework.hydra_search_path import register_search_path
from framework.wandb_records import read_runs

ARCHLAB = str(Path(sys.executable).parent / "archlab")
TINY = ["data=synthetic", "debug=fast", "model.d_model=32", "model.n_layers=1", "model.n_heads=2",
        "sample.prompt=null"]
SEARCH = [o for o in TINY if not o.startswith("model.d_model=")]  # d_model is searched


def _hydra(overrides: list[str]):
    register_search_path()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def _sweep(argv: list[str], capsys) -> tuple[int, str]:
    from framework.cli import main

    try:
        code = main(["train", "-m", *argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().out


def _results(sweep_dir: Path) -> dict[int, JobResult]:
    import json

    return {r.number: r for r in (JobResult(**json.loads(p.read_text())) for p in sweep_dir.rglob(RESULT_FILE))}


def test_launcher_and_search_configs(tmp_path):
    slurm = _hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}"])
    launcher = slurm.hydra.launcher
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node, launcher.cpus_per_task,
            launcher.signal_delay_s, launcher.max_num_timeout) == ("gpu", 1440, 1, 8, 120, 3)
    assert launcher.submitit_folder == f"{tmp_path}/.submitit/%j"
    local = _hydra(["hydra/launcher=submitit"]).hydra.launcher
    assert local._target_.endswith("LocalLauncher") and local.cpus_per_task == 1
    single = _hydra(["hparams_search=optuna"])
    assert single.hydra.sweeper.direction == "minimize" and single.objective == "val/loss"
    assert set(single.hydra.sweeper.params) == {"optimizer.lr", "model.d_model", "model.n_layers",
                                                "scheduler.warmup_steps"}
    multi = _hydra(["hparams_search=optuna_multi"])
    assert list(multi.objective) == ["val/loss", "model/params"] and len(multi.hydra.sweeper.direction) == 2


def test_optuna_search_checks_each_value_first(tmp_path, capsys):
    """Optuna picks trials as it goes: each search value is checked on its own before the first trial starts."""
    from framework.cli import main

    code = main(["train", "-m", "hparams_search=optuna", *TINY, "model.d_model=choice(32,33)",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "sweep").exists()
    assert "probe configs (each search value on its own) have a bad config" in err and "model.d_model=33" in err


@pytest.mark.slow
def test_optuna_study_of_4_trials_names_its_best_trial(tmp_path, capsys):
    code, out = _sweep(["hparams_search=optuna", *SEARCH, "model.d_model=choice(16,32)", "scheduler.warmup_steps=range(0,4)",
                        "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.n_startup_trials=2", "logger=csv",
                        f"hydra.sweep.dir={tmp_path}"], capsys)
    assert code == 0 and "4 of 4 jobs ok" in out
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"optimizer.lr", "model.d_model", "scheduler.warmup_steps"}
    results = _results(tmp_path)
    assert sorted(results) == [0, 1, 2, 3]
    winner = [r for r in results.values() if r.val_loss == best["best_value"]]
    assert len(winner) == 1 and best["best_value"] == min(r.val_loss for r in results.values())
    assert {f"{k}={v}" for k, v in best["best_params"].items()} <= set(winner[0].overrides)


@pytest.mark.slow
def test_optuna_multi_objective_returns_loss_and_size(tmp_path, capsys):
    code, _ = _sweep(["hparams_search=optuna_multi", *SEARCH, "model.d_model=choice(16,32)", "hydra.sweeper.n_trials=2",
                      "logger=csv", f"hydra.sweep.dir={tmp_path}"], capsys)
    assert code == 0
    front = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())["solutions"]
    losses = {r.val_loss for r in _results(tmp_path).values()}
    from framework import build_model

    for solution in front:
        loss, params = solution["values"]
        model = build_model("decoder", d_model=solution["params"]["model.d_model"], n_layers=1, n_heads=2,
                            vocab_size=18, max_seq_len=32)  # data=synthetic's vocabulary and length
        assert loss in losses and params == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_and_tables_their_failures(tmp_path, capsys):
    """2 jobs train side by side in joblib workers (one torch thread each) and write 2 complete W&B runs; 2 more
    fail at run time (resume=true without a checkpoint) in their workers: the sweeping process tables all 4."""
    code, out = _sweep(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY, "optimizer.lr=1e-3,3e-3",
                        "resume=false,true", "logger=wandb", "callbacks=none", f"hydra.sweep.dir={tmp_path}"], capsys)
    assert code == 1
    table = out[out.index("job  overrides"):]
    assert "2 of 4 jobs ok, 2 failed" in table and table.count("config error") >= 2
    runs = read_runs(tmp_path, wait_s=20)
    assert len(runs) == 2 and all(r.finished for r in runs)
    assert {r.config["optimizer"]["lr"] for r in runs} == {1e-3, 3e-3}
    results = _results(tmp_path)
    for run in runs:
        job = int(run.path.relative_to(tmp_path).parts[0])  # <sweep dir>/<job>/wandb/...: the basic layout
        assert run.summary["val/loss"] == pytest.approx(results[job].val_loss)
        assert (tmp_path / str(job) / "train.log").is_file()


def _fit_pid(log: Path, deadline: float) -> int:
    """The pid a job's fit runs in, once PreemptionCheckpoint has taken the signals (its line in the job's log).
    A signal before that goes to submitit's own handler, which reruns the job from the start."""
    pattern = re.compile(r"SIGUSR2 to pid (\d+) save")
    while time.time() < deadline:
        found = pattern.search(log.read_text()) if log.is_file() else None
        if found:
            return int(found.group(1))
        time.sleep(0.1)
    raise AssertionError(f"no fit started in {log.parent}: {log.read_text()[-2000:] if log.is_file() else 'no log'}")


@pytest.mark.slow
def test_submitit_sweep_preempted_job_is_requeued_and_resumes(tmp_path):
    """A 2-job sweep through submitit (local): job directories as under the basic launcher; one job gets submitit's
    pre-emption signal mid-training: last.ckpt at the end of the step, requeued with resume=true, the same W&B run
    continued to max_steps."""
    steps = 600
    proc = subprocess.Popen([ARCHLAB, "train", "-m", "hydra/launcher=submitit", *TINY, "seed=1,2", "logger=wandb",
                             f"trainer.max_steps={steps}", "trainer.val_check_interval=300", f"hydra.sweep.dir={tmp_path}"],
                            env={**os.environ, "WANDB_MODE": "offline"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    pid = _fit_pid(tmp_path / "0" / "train.log", deadline=time.time() + 120)  # its fit is under way, handlers in
    os.kill(pid, signal.SIGUSR2)  # what SLURM sends (--signal=USR2@signal_delay_s) before a time limit
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    assert "2 of 2 jobs ok" in out
    logs = {n: (tmp_path / str(n) / "train.log").read_text() for n in (0, 1)}
    preempted = [n for n, text in logs.items() if "SIGUSR2 at step" in text]
    assert preempted == [0]
    job = tmp_path / str(preempted[0])
    assert torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == steps
    runs = read_runs(job, wait_s=20)
    assert len({r.run_id for r in runs}) == 1 and len(runs) >= 1  # the resumed part continues the same W&B run
    assert read_runs(tmp_path / str(1 - preempted[0]), wait_s=20)[0].finished
