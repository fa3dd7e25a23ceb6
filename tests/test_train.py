"""The generic Lightning loop end to end: learning, checkpoints, resume, determinism, bad config."""
from __future__ import annotations

import pytest
import torch

from framework.checkpoint import load_checkpoint
from framework.config_schema import ConfigError
from framework.train import train
from hydra_compose import FAST, compose_train

COPY_TASK = ["data=synthetic", "data.task=copy", "data.length=8", "data.seq_len=16", "data.vocab_size=12",
             "model.d_model=64", "model.n_layers=2", "model.n_heads=4", "optimizer.lr=3e-3",
             "optimizer.weight_decay=0.0", "scheduler.warmup_steps=20", "logger=csv", "sample.prompt=null",
             "data.batch_size=32", "trainer.enable_progress_bar=false"]


@pytest.mark.slow
def test_gpt_learns_copy_task_to_95_percent(tmp_path):
    cfg = compose_train(COPY_TASK + ["trainer.max_steps=300", "trainer.val_check_interval=100"], tmp_path)
    result = train(cfg)
    assert result["metrics"]["val/acc"] >= 0.95, result["metrics"]
    assert result["metrics"]["val/exact_match"] >= 0.6


def test_checkpoint_resume_and_reload(tmp_path):
    cfg = compose_train(FAST + ["data=synthetic", "sample.prompt=null"], tmp_path)
    first = train(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file() and first["best_checkpoint"]
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 6
    # Resume continues from step 6 to 10 in the same directory; nothing of the first run is lost.
    cfg2 = compose_train(FAST + ["data=synthetic", "sample.prompt=null", "resume=true", "trainer.max_steps=10"],
                         tmp_path)
    train(cfg2)
    assert torch.load(last, weights_only=True)["global_step"] == 10
    model, hparams = load_checkpoint(last)
    assert hparams["plugin_name"] == "decoder"
    out = model(torch.randint(0, 10, (1, 8)))
    assert out.logits.shape[-1] == hparams["model_config"]["vocab_size"]


def test_same_seed_same_result(tmp_path):
    overrides = FAST + ["data=synthetic", "sample.prompt=null", "callbacks=none"]
    a = train(compose_train(overrides, tmp_path / "a"))["metrics"]
    b = train(compose_train(overrides, tmp_path / "b"))["metrics"]
    c = train(compose_train(overrides + ["seed=7"], tmp_path / "c"))["metrics"]
    assert a["val/loss"] == b["val/loss"]
    assert a["val/loss"] != c["val/loss"]


@pytest.mark.parametrize(
    "override, field",
    [
        ("model.d_model=30", "d_model"),
        ("+model.nonsense=1", "nonsense"),
        ("model.position=fancy", "position"),
        ("scheduler.warmup_steps=-1", "warmup_steps"),
        ("resume=true", "resume"),
        ("optimizer.lr=-1", "optimizer"),
        ("data=shakespeare,data.seq_len=100000000", "seq_len"),
        ("data.task=nosuch", "data.task"),
        ("trainer.precision=16-mixed", "optimizer.fused"),  # fused AdamW + fp16 clipping: Lightning can't
    ],
)
def test_bad_config_fails_before_training_naming_the_field(tmp_path, override, field):
    cfg = compose_train(FAST + ["data=synthetic", *override.split(",")], tmp_path)
    with pytest.raises(ValueError, match=field):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_resume_requires_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="resume"):
        train(compose_train(FAST + ["data=synthetic", "resume=true"], tmp_path))


def test_bf16_mixed_accumulation_and_training_step_plugin_metrics(tmp_path):
    cfg = compose_train(FAST + ["data=synthetic", "sample.prompt=null", "callbacks=none",
                                "trainer.precision=bf16-mixed", "trainer.accumulate_grad_batches=2",
                                "plugin_metrics_every_n_steps=2"], tmp_path)
    metrics = train(cfg)["metrics"]
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
    assert "train/resid/rms/mean" in metrics and "resid/rms/layer0" in metrics
    rows = (tmp_path / "csv").rglob("metrics.csv")
    header = next(iter(rows)).read_text().splitlines()[0]
    for key in ("train/loss", "train/grad_norm", "train/lr", "perf/tokens_per_sec", "val/ppl", "model/params"):
        assert key in header, key


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_fused_adamw_under_bf16_mixed_still_clips(tmp_path, monkeypatch, algorithm):
    """Lightning refuses to clip for fused optimizers under mixed precision; bf16 has no loss scaling, so the
    module clips itself (by norm with the norm it already took for the non-finite guard). Without that the run
    would raise at the first optimizer step."""
    calls = []
    for name in ("clip_grads_with_norm_", "clip_grad_value_"):
        real = getattr(torch.nn.utils, name)
        monkeypatch.setattr(torch.nn.utils, name,
                            lambda params, limit, *a, _real=real, _name=name, **k: calls.append((_name, limit))
                            or _real(params, limit, *a, **k))
    cfg = compose_train(FAST + ["data=synthetic", "sample.prompt=null", "callbacks=none", "trainer.max_steps=2",
                                "trainer.precision=bf16-mixed", "trainer.gradient_clip_val=0.5",
                                f"trainer.gradient_clip_algorithm={algorithm}"], tmp_path)
    assert cfg.optimizer.fused is True
    train(cfg)
    assert calls == [("clip_grads_with_norm_" if algorithm == "norm" else "clip_grad_value_", 0.5)] * 2
