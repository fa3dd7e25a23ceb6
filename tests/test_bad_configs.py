"""The command line's battery of bad configs and inputs: each one a non-zero exit before any training, a message
naming the field, no traceback, and the files already in the run directory untouched."""
from __future__ import annotations

import pytest
import torch

from framework.cli import main

# (overrides, what the message must name). Every config group, and combinations that make no sense.
BAD = [
    # model
    (["model=nonexistent"], "model=nonexistent"),
    (["model.d_model=33"], "d_model"),
    (["model.n_layers=0"], "n_layers"),
    (["model.dropout=1.5"], "dropout"),
    (["model.mixer=foo"], "mixer"),
    (["model.layers=[attention,lstm,lstm]", "model.n_layers=4"], "layers"),
    (["model.ffn=bogus"], "ffn"),
    (["+model.nonsense=1"], "nonsense"),
    (["model.vocab_size=100"], "model.vocab_size"),
    (["model.max_seq_len=32"], "data.seq_len"),
    (["model=lstm", "model.stateful=true"], "model.stateful"),
    (["model.position=rotary"], "position"),
    (["model.n_kv_heads=3"], "n_kv_heads"),
    (["model.norm=batchnorm"], "norm"),
    (["model.moe.n_experts=4"], "moe"),
    (["model.tie_weights=maybe"], "tie_weights"),
    (["+model.label_smoothing=0.1"], "label_smoothing"),
    # data
    (["data.seq_len=0"], "data.seq_len"),
    (["data.batch_size=0"], "data.batch_size"),
    (["data.val_fraction=1.5"], "data.val_fraction"),
    (["data.source=wiki"], "source"),
    (["data=synthetic", "data.task=bogus"], "task"),
    (["data=synthetic", "data.task=mqar", "data.num_kv=100"], "data.num_kv"),
    (["data.order=random"], "order"),
    (["data.paths=notes.txt"], "data.paths"),
    (["data.max_bytes=0"], "data.max_bytes"),
    (["data=seq2seq"], "data.objective"),
    (["data.batch_size=100000"], "data.batch_size"),
    # optimizer
    (["optimizer.lr=abc"], "optimizer.lr"),
    (["optimizer.lr=-1"], "optimizer"),
    (["optimizer.betas=[0.9]"], "optimizer.betas"),
    (["+optimizer.foo=1"], "optimizer.foo"),
    (["optimizer.fused=yes"], "optimizer.fused"),
    (["optimizer.weight_decay=high"], "optimizer.weight_decay"),
    (["optimizer=sgd", "optimizer.momentum=-1"], "optimizer"),
    (["optimizer._target_=torch.optim.Nope"], "optimizer._target_"),
    (["trainer.precision=16-mixed"], "optimizer.fused"),  # fused + fp16 loss scaling + clipping
    # scheduler
    (["scheduler.warmup_steps=-3"], "scheduler.warmup_steps"),
    (["scheduler.warmup_steps=1.5"], "scheduler.warmup_steps"),
    (["scheduler.min_lr_ratio=2"], "scheduler.min_lr_ratio"),
    (["+scheduler.foo=1"], "scheduler.foo"),
    # trainer
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val"),
    (["trainer.gradient_clip_algorithm=sideways"], "trainer.gradient_clip_algorithm"),
    (["trainer.precision=bf17"], "trainer.precision"),
    (["trainer.max_steps=0"], "trainer.max_steps"),
    (["+trainer.foo=1"], "trainer.foo"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps"),
    (["trainer.accelerator=7"], "trainer.accelerator"),
    (["trainer.deterministic=maybe"], "trainer.deterministic"),
    (["trainer.val_check_interval=-5"], "trainer.val_check_interval"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches"),
    # logger and callbacks
    (["logger=csv", "+logger.csv.foo=1"], "logger.csv.foo"),
    (["+callbacks.model_checkpoint.foo=1"], "callbacks.model_checkpoint.foo"),
    (["callbacks.model_checkpoint.save_top_k=abc"], "callbacks.model_checkpoint.save_top_k"),
    # run options
    (["seed=abc"], "seed"),
    (["seed=1.5"], "seed"),
    (["loss.label_smoothing=1.0"], "loss.label_smoothing"),
    (["nonfinite.max_skips=-1"], "nonfinite.max_skips"),
    (["checkpoint.every_n_steps=0"], "checkpoint.every_n_steps"),
    (["checkpoint.every_n_minutes=-2"], "checkpoint.every_n_minutes"),
    (["ckpt_path=/nonexistent/model.ckpt"], "ckpt_path"),
    (["resume=true"], "resume"),
]


def test_the_battery_is_large():
    assert len(BAD) >= 50


@pytest.fixture
def run_dir(tmp_path):
    """A run directory already holding someone's files, which no bad command may touch."""
    (tmp_path / "notes.txt").write_text("results of last week")
    return tmp_path


def _train(argv, run_dir, capsys):
    try:
        code = main(["train", f"hydra.run.dir={run_dir}", "logger=csv", "trainer.max_steps=2", *argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("overrides,field", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_config_fails_early_and_clearly(overrides, field, run_dir, capsys):
    code, err = _train(overrides, run_dir, capsys)
    assert code not in (0, None), err
    assert field in err, err
    assert "Traceback" not in err, err
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "csv").exists()  # no training started
    assert (run_dir / "notes.txt").read_text() == "results of last week"


@pytest.mark.parametrize("content", [b"not a checkpoint", None, b"foreign"], ids=["garbage", "truncated", "foreign"])
def test_bad_checkpoint_files_get_one_line(tmp_path, run_dir, capsys, content):
    path = tmp_path / "model.ckpt"
    if content == b"foreign":
        torch.save({"weights": torch.ones(2)}, path)
    elif content is None:
        torch.save({"state_dict": {"w": torch.ones(1000)}, "hyper_parameters": {}}, path)
        path.write_bytes(path.read_bytes()[:500])
    else:
        path.write_bytes(content)
    code, err = _train([f"ckpt_path={path}"], run_dir, capsys)
    assert code == 2 and "Traceback" not in err
    assert str(path) in err and ("not a checkpoint" in err or "not written by archlab" in err), err


def test_resuming_a_checkpoint_of_another_model_names_the_field(tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["train", f"hydra.run.dir={first}", "logger=csv", "trainer.max_steps=2", "sample.prompt=null"]) == 0
    last = first / "checkpoints" / "last.ckpt"
    code, err = _train([f"ckpt_path={last}", "model.d_model=64"], tmp_path / "second", capsys)
    assert code == 2 and "model.d_model=128 (this run: 64)" in err and "Traceback" not in err
    code, err = _train([f"ckpt_path={last}", "model=bert"], tmp_path / "third", capsys)
    assert code == 2 and "checkpoint of model plugin 'decoder'" in err


def test_a_run_directory_that_cannot_be_made_is_named(tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a directory")
    code = main(["train", f"hydra.run.dir={tmp_path / 'a_file' / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and "hydra.run.dir" in err and "is a file" in err and "Traceback" not in err
