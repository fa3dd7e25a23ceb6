"""loss.label_smoothing: a core option of the training loss only (validation reports the plain NLL)."""
from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import open_dict
from torch.nn import functional as F
from torch.testing import assert_close

from framework.config_schema import ConfigError
from framework.lit_module import ArchitectureModule
from framework.train import train
from hydra_compose import FAST, compose_train

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import core_fixture  # noqa: E402


def _module(smoothing: float) -> ArchitectureModule:
    torch.manual_seed(0)
    config = core_fixture.model_config(vocab_size=18, seq_len=16)
    config.pop("plugin")
    module = ArchitectureModule(core_fixture.NAME, config, label_smoothing=smoothing)
    module.trainer = L.Trainer(logger=False, enable_progress_bar=False, log_every_n_steps=50)  # step 0: no logs
    return module


def test_smoothing_is_f_cross_entropy_with_label_smoothing_in_training_only(monkeypatch):
    core_fixture.registered(monkeypatch)
    ids = torch.randint(2, 18, (4, 16))
    labels = torch.randint(2, 18, (4, 16))
    labels[:, :5] = -100  # ignored positions stay ignored
    batch = {"input_ids": ids, "labels": labels}
    plain, smoothed = _module(0.0), _module(0.2)
    logits = smoothed.model(ids).logits.reshape(-1, 18)
    assert_close(smoothed.training_step(batch, 0),
                 F.cross_entropy(logits, labels.flatten(), ignore_index=-100, label_smoothing=0.2))
    assert_close(plain.training_step(batch, 0), F.cross_entropy(logits, labels.flatten(), ignore_index=-100))
    for module in (plain, smoothed):  # validation: the unsmoothed NLL whatever the training loss
        module.validation_step(batch, 0)
        assert_close(module.val_loss.compute(), F.cross_entropy(logits, labels.flatten(), ignore_index=-100))


@pytest.mark.parametrize("value", ["1.0", "-0.1", "abc", "true"])
def test_bad_label_smoothing_fails_naming_the_key(tmp_path, value):
    cfg = compose_train(FAST + ["data=synthetic", f"loss.label_smoothing={value}"], tmp_path)
    with pytest.raises(ConfigError, match=r"loss\.label_smoothing"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_the_old_model_key_says_where_label_smoothing_went(tmp_path):
    cfg = compose_train(FAST + ["model=transformer", "data=seq2seq", "+model.label_smoothing=0.1"], tmp_path)
    with pytest.raises(ConfigError, match=r"model\.label_smoothing.*loss\.label_smoothing"):
        train(cfg)


def test_train_loss_changes_and_val_loss_does_not(monkeypatch, tmp_path):
    """lr=0: the weights never move, so only the training loss may differ between the two runs."""
    core_fixture.registered(monkeypatch)
    results = []
    for eps in (0.0, 0.3):
        cfg = compose_train(FAST + ["data=synthetic", "callbacks=none", "sample.prompt=null", "optimizer.lr=0",
                                    "trainer.max_steps=3", f"loss.label_smoothing={eps}"], tmp_path / str(eps))
        with open_dict(cfg):
            cfg.model = core_fixture.model_config(cfg.data.vocab_size, cfg.data.seq_len)
        results.append(train(cfg)["metrics"])
    plain, smoothed = results
    assert plain["val/loss"] == smoothed["val/loss"]
    assert plain["train/loss"] != smoothed["train/loss"]
