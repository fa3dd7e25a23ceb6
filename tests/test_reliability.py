"""Long runs and sweeps: exact resume (data position, RNG, carried state, W&B run), the non-finite guard,
no clobbering, atomic / periodic / pre-emption checkpoints."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler

from framework.checkpointing import AtomicCheckpointIO
from framework.config_schema import ConfigError
from framework.data.loaders import train_loader
from framework.lit_module import NonFiniteError
from framework.train import train
from hydra_compose import compose_train

RUN = ["model.d_model=32", "model.n_layers=2", "model.n_heads=2", "trainer.val_check_interval=25",
       "trainer.log_every_n_steps=1", "sample.prompt=null", "trainer.enable_progress_bar=false", "logger=csv"]
TEXT = ["data.max_bytes=30000", "data.batch_size=8", "data.seq_len=32", "data.val_windows=16"]  # ~100 batches an epoch
TINY = RUN + TEXT


class LossRecorder(L.Callback):
    """train loss at every step, read back from the callback (one list per run)."""

    runs: list[dict[int, float]] = []

    def on_train_start(self, trainer, module):
        LossRecorder.runs.append({})

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        LossRecorder.runs[-1][trainer.global_step] = float(outputs["loss"])


RECORD = ["+callbacks.recorder._target_=test_reliability.LossRecorder"]


# --- the resumable loader --------------------------------------------------------------------------------


def test_training_order_is_unchanged_and_resumes_mid_epoch():
    data = [torch.tensor(i) for i in range(103)]
    before = DataLoader(data, batch_size=10, sampler=RandomSampler(data, generator=torch.Generator().manual_seed(7)),
                        drop_last=True)  # the loader every earlier run used: golden losses depend on its order
    loader = train_loader(data, 10, 0, seed=7)
    order = [b.tolist() for _ in range(3) for b in loader]
    assert order == [b.tolist() for _ in range(3) for b in before]
    resumed = train_loader(data, 10, 0, seed=7)
    resumed.load_state_dict({"epoch": 1, "batches": 4})  # 4 batches of epoch 1 were trained on
    assert [b.tolist() for _ in range(2) for b in resumed] == order[14:30]
    at_end = train_loader(data, 10, 0, seed=7)
    at_end.load_state_dict({"epoch": 0, "batches": 10})  # saved at the epoch's last batch: the next epoch follows
    assert [b.tolist() for b in at_end] == order[10:20]


def test_loader_state_counts_batches_taken_not_fetched():
    loader = train_loader([torch.tensor(i) for i in range(40)], 4, 0, seed=0)
    it = iter(loader)
    next(it), next(it), next(it)  # Lightning fetches ahead: the third batch is not trained on yet
    loader.mark(2)
    assert loader.state_dict() == {"epoch": 0, "batches": 2}


# --- exact resume -----------------------------------------------------------------------------------------


def _interrupted_vs_straight(tmp_path: Path, extra: list[str]) -> tuple[dict, dict, dict, dict]:
    """Train 60 steps straight (keeping its step-30 checkpoint, as a kill -9 right after that save would leave
    it); then a second run from that checkpoint to step 60."""
    LossRecorder.runs.clear()
    common = RUN + RECORD + ["trainer.max_steps=60", *extra]
    keep_30 = ["+callbacks.at_30._target_=lightning.pytorch.callbacks.ModelCheckpoint", "+callbacks.at_30.save_top_k=-1",
               f"+callbacks.at_30.dirpath={tmp_path / 'at_30'}", "+callbacks.at_30.every_n_train_steps=30",
               "+callbacks.at_30.filename='at{step}'", "+callbacks.at_30.auto_insert_metric_name=false"]
    straight = train(compose_train(common + keep_30, tmp_path / "straight"))
    at_30 = tmp_path / "at_30" / "at30.ckpt"
    assert torch.load(at_30, weights_only=True)["global_step"] == 30
    resumed = train(compose_train(common + [f"ckpt_path={at_30}"], tmp_path / "resumed"))
    return LossRecorder.runs[0], LossRecorder.runs[1], straight["metrics"], resumed["metrics"]


@pytest.mark.parametrize("extra", [
    TEXT,                                                                 # the default: gpt on Shakespeare
    TEXT + ["model.dropout=0.1"],                                         # RNG continues (dropout masks)
    TEXT + ["trainer.precision=bf16-mixed"],                              # bf16 autocast (CPU kernels: exact too)
    ["data=synthetic", "data.task=copy", "data.length=8", "data.seq_len=16", "data.vocab_size=12",
     "data.n_train=400", "data.n_val=64", "data.batch_size=16"],          # a synthetic task, several epochs
    ["model=lstm", "data.order=contiguous", "model.stateful=true", *TEXT],  # carried TBPTT state
], ids=["default", "dropout", "bf16", "synthetic", "stateful_lstm"])
def test_resumed_run_continues_exactly(tmp_path, extra):
    straight, resumed, final_straight, final_resumed = _interrupted_vs_straight(tmp_path, extra)
    assert sorted(resumed) == list(range(31, 61))
    assert max(abs(straight[s] - resumed[s]) for s in resumed) <= 1e-6
    assert abs(final_straight["val/loss"] - final_resumed["val/loss"]) <= 1e-6


def test_kill_9_then_resume_matches_the_uninterrupted_run(tmp_path):
    """A real kill -9 of ``archlab train`` after its first periodic checkpoint, then resume=true."""
    args = [sys.executable, "-m", "framework.cli", "train", *TINY, "trainer.max_steps=80", "checkpoint.every_n_steps=20",
            "trainer.val_check_interval=40"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    straight = subprocess.run([*args, f"hydra.run.dir={tmp_path / 'straight'}"], env=env, capture_output=True,
                              text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([*args, f"hydra.run.dir={run_dir}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(last, weights_only=True)["global_step"]
    assert 20 <= step < 80  # killed mid-run
    resumed = subprocess.run([*args, f"hydra.run.dir={run_dir}", "resume=true"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _csv_series(tmp_path / "straight"), _csv_series(run_dir)
    assert b["val/loss"] and a["val/loss"][-1] == pytest.approx(b["val/loss"][-1], abs=1e-6)
    later = {s: v for s, v in b["train/loss_by_step"].items() if s > step}
    assert later and max(abs(a["train/loss_by_step"][s] - v) for s, v in later.items()) <= 1e-6


def _csv_series(run_dir: Path) -> dict:
    import csv

    rows = [row for f in sorted(run_dir.rglob("metrics.csv")) for row in csv.DictReader(open(f))]
    out = {"val/loss": [float(r["val/loss"]) for r in rows if r.get("val/loss")], "train/loss_by_step": {}}
    for r in rows:
        if r.get("train/loss"):
            out["train/loss_by_step"][int(r["step"])] = float(r["train/loss"])
    return out


def test_resumed_run_continues_the_same_wandb_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_CONSOLE", "off")):
        monkeypatch.setenv(var, value)
    base = [o for o in TINY if o != "logger=csv"] + ["logger=wandb", "trainer.max_steps=10"]
    train(compose_train(base, tmp_path))
    train(compose_train(base[:-1] + ["trainer.max_steps=16", "resume=true"], tmp_path))
    # offline-run-<start second>-<run id>, and "-1" appended when the resumed run starts within the same second
    dirs = sorted(p.name for p in (tmp_path / "wandb").glob("offline-run-*"))
    runs = [re.fullmatch(r"offline-run-\d{8}_\d{6}-([0-9a-z]+)(-\d+)?", name).group(1) for name in dirs]
    assert len(runs) == 2 and runs[0] == runs[1], dirs


# --- divergence -------------------------------------------------------------------------------------------


def test_diverging_run_stops_with_the_step_and_keeps_only_finite_checkpoints(tmp_path):
    bad = compose_train(TINY + ["trainer.max_steps=60", "optimizer.lr=1e6", "trainer.gradient_clip_val=null",
                                "checkpoint.every_n_steps=1"], tmp_path)
    with pytest.raises(NonFiniteError, match=r"at step \d+"):
        train(bad)
    last = tmp_path / "checkpoints" / "last.ckpt"
    if last.exists():  # checkpoints written before the divergence hold finite weights only
        saved = torch.load(last, weights_only=True)
        assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
        assert saved["global_step"] < 60


def test_nonfinite_batches_are_skipped_up_to_max_skips(tmp_path, monkeypatch):
    from framework.lit_module import ArchitectureModule

    real = ArchitectureModule._step

    def poisoned(self, batch, label_smoothing=0.0):
        out, loss = real(self, batch, label_smoothing)
        return out, loss * float("nan") if self.training and self.global_step in (3, 5) else loss

    monkeypatch.setattr(ArchitectureModule, "_step", poisoned)
    result = train(compose_train(TINY + ["trainer.max_steps=8", "nonfinite.max_skips=2"], tmp_path / "ok"))
    assert result["metrics"]["train/nonfinite_skips"] == 2
    with pytest.raises(NonFiniteError, match="after skipping 1 batches"):
        train(compose_train(TINY + ["trainer.max_steps=8", "nonfinite.max_skips=1"], tmp_path / "too_many"))


@pytest.mark.parametrize("bad", ["nonfinite.max_skips=-1", "nonfinite.max_skips=1.5", "checkpoint.every_n_steps=0",
                                 "checkpoint.every_n_minutes=-2"])
def test_bad_reliability_options_fail_before_training(tmp_path, bad):
    with pytest.raises(ConfigError, match=bad.split("=")[0]):
        train(compose_train(TINY + [bad], tmp_path))
    assert not (tmp_path / "checkpoints").exists()


# --- no clobbering, atomic and pre-emption checkpoints ----------------------------------------------------


def test_a_new_run_refuses_a_directory_holding_checkpoints(tmp_path):
    train(compose_train(TINY + ["trainer.max_steps=4"], tmp_path))
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(ConfigError, match=r"already holds a run's checkpoints.*resume=true.*overwrite=true"):
        train(compose_train(TINY + ["trainer.max_steps=4"], tmp_path))
    assert last.read_bytes() == before
    train(compose_train(TINY + ["trainer.max_steps=3", "overwrite=true"], tmp_path))
    assert torch.load(last, weights_only=True)["global_step"] == 3


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, path)

    def dies_midway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # as a kill during the write

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1"])
def test_preemption_signal_saves_and_stops_cleanly(tmp_path, sig):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "framework.cli", "train", *TINY, "trainer.max_steps=100000",
            f"hydra.run.dir={run_dir}", "trainer.val_check_interval=100000"]
    proc = subprocess.Popen(args, env={**os.environ, "WANDB_MODE": "offline"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not list(run_dir.rglob("hparams.yaml")) and time.time() < deadline:  # the fit has begun
        time.sleep(0.1)
    time.sleep(3.0)  # some training steps
    proc.send_signal(getattr(signal, sig))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:]
    step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < step < 100000
    assert sig in out and "resume=true" in out


# --- sweeps -----------------------------------------------------------------------------------------------


def _sweep(argv: list[str], sweep_dir: Path, capsys) -> tuple[int, str, str]:
    from framework.cli import main

    try:
        code = main(["train", "-m", *TINY, "trainer.max_steps=12", "trainer.val_check_interval=6", *argv,
                     f"hydra.sweep.dir={sweep_dir}"])
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_sweep_with_a_bad_job_fails_before_any_job_starts(tmp_path, capsys):
    code, _, err = _sweep(["model.d_model=32,33", "optimizer.lr=1e-3,3e-3"], tmp_path / "sweep", capsys)
    assert code == 2
    assert "2 of 4 sweep jobs have a bad config; no job was started" in err
    assert "job 2 (model.d_model=33 optimizer.lr=0.001): model (decoder): d_model" in err and "Traceback" not in err
    assert not (tmp_path / "sweep").exists()


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    code, out, _ = _sweep(["optimizer.lr=1e6,1e-3", "trainer.gradient_clip_val=null"], tmp_path / "sweep", capsys)
    assert code == 1  # a job failed
    table = out[out.index("job  overrides"):]
    assert "diverged" in table and " ok " in table and "1 of 2 jobs ok, 1 failed" in table
    assert (tmp_path / "sweep" / "1" / "checkpoints" / "last.ckpt").exists()  # the job after the failure ran


# --- a plain install --------------------------------------------------------------------------------------

# What `pip install .` without extras lacks: a training run may not need any of it.
DEV_ONLY = ("matplotlib", "transformers", "pytest")
PLAIN_INSTALL_TRAIN = r"""
import importlib.abc, importlib.metadata as md, sys
def _hide(real):  # the packages' metadata too: libraries ask it whether an optional package is there
    def lookup(name, *args, **kwargs):
        if name.lower() in DEV_ONLY:
            raise md.PackageNotFoundError(name)
        return real(name, *args, **kwargs)
    return lookup
md.version, md.distribution = _hide(md.version), _hide(md.distribution)
class NoDevPackages(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in DEV_ONLY:
            raise ModuleNotFoundError(f"No module named {name!r} (a plain install)", name=name)
sys.meta_path.insert(0, NoDevPackages())
from framework.cli import main
failed = []
for preset, data in PRESETS:
    args = ["train", f"model={preset}", *data, "trainer.max_steps=1", "trainer.val_check_interval=1",
            "trainer.limit_val_batches=1", "sample.max_new_tokens=4", f"hydra.run.dir={OUT}/{preset}",
            "trainer.enable_progress_bar=false", "callbacks=none"]
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    if code not in (0, None):
        failed.append(preset)
print("FAILED", failed)
"""


def test_every_preset_trains_without_the_dev_extra(tmp_path):
    """A plain install (no matplotlib, transformers, pytest: imports of them fail) trains every built-in preset with
    the default W&B logger, sparse attention figures included (drawn with NumPy)."""
    from framework.hydra_search_path import model_options

    text = ["data.max_bytes=20000", "data.batch_size=2", "data.seq_len=64"]
    seq2seq = ["data=seq2seq", "data.n_train=64", "data.n_val=8", "data.batch_size=4"]
    kinds = {"t5": seq2seq, "t5_v1_1": seq2seq, "transformer": seq2seq, "transformer_base": seq2seq + ["model.d_model=32",
             "model.n_heads=2", "model.d_ff=64"], "rnn_seq2seq": seq2seq}
    presets = [(p, kinds.get(p, text)) for p in sorted(model_options())]
    script = f"DEV_ONLY = {DEV_ONLY!r}\nPRESETS = {presets!r}\nOUT = {str(tmp_path)!r}\n" + PLAIN_INSTALL_TRAIN
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert "FAILED []" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list((tmp_path / "longformer" / "wandb").glob("offline-run-*"))


def test_sparse_pattern_figure_without_matplotlib(monkeypatch):
    from framework import build_model
    from framework.nn.sparse import SparseSelfAttention

    model = build_model("decoder", mixer="sliding_window", n_layers=1, d_model=32, n_heads=2, max_seq_len=64)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    image = model.figures()["attn/pattern"]
    assert image.dtype.name == "uint8" and image.ndim == 3 and image.shape[2] == 3
    attn = model.blocks[0].mixer
    assert isinstance(attn, SparseSelfAttention)
    mask = attn.groups[0][2].mask(64)
    panel = image[:128, :128, 0] == 0  # black = attended, 2 pixels a cell
    assert panel[::2, ::2].tolist() == mask.tolist()


def test_a_diverged_run_is_marked_failed_in_wandb(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from framework.wandb_records import read_runs

    for var, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_CONSOLE", "off")):
        monkeypatch.setenv(var, value)
    base = [o for o in TINY if o != "logger=csv"] + ["logger=wandb"]
    train(compose_train(base + ["trainer.max_steps=3"], tmp_path / "good"))
    with pytest.raises(NonFiniteError):
        train(compose_train(base + ["trainer.max_steps=30", "optimizer.lr=1e6", "trainer.gradient_clip_val=null"],
                            tmp_path / "bad"))
    (good,), (bad,) = read_runs(tmp_path / "good", wait_s=30), read_runs(tmp_path / "bad", wait_s=30)
    assert good.exit_code == 0 and bad.exit_code == 1


def test_checkpoints_every_n_minutes(tmp_path, monkeypatch):
    saves = []
    real = AtomicCheckpointIO.save_checkpoint
    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint",
                        lambda self, ckpt, path, *a, **k: saves.append(ckpt["global_step"]) or real(self, ckpt, path, *a, **k))
    train(compose_train(TINY + ["trainer.max_steps=6", "trainer.val_check_interval=1000", "callbacks=none",
                                "checkpoint.every_n_minutes=0.00001"], tmp_path))
    assert sorted(set(saves)) == [1, 2, 3, 4, 5, 6]  # every step: more than a few microseconds apart


def test_a_diverging_run_exits_3_from_the_command_line(tmp_path, capsys):
    from framework.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["train", *TINY, "trainer.max_steps=30", "optimizer.lr=1e6", "trainer.gradient_clip_val=null",
              f"hydra.run.dir={tmp_path}"])
    assert exit_.value.code == 3
    err = capsys.readouterr().err
    assert "diverged" in err and "at step" in err and "Traceback" not in err
