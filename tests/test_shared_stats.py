"""Shared statistics (stats keys with "/") are averaged and logged by the core; plugin metric names are full
log keys. Checked on a fixture plugin whose stats are known functions of the batch, read back from W&B."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from torch.testing import assert_close

from framework.data.build import build_datamodule
from framework.shared_stats import SharedStats
from framework.train import train
from framework.wandb_records import read_runs
from hydra_compose import FAST, compose_train

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import core_fixture  # noqa: E402

NAN = float("nan")


def test_per_layer_running_mean_skips_nan_layer_by_layer():
    shared = SharedStats()
    shared.update({"attn/entropy": torch.tensor([1.0, NAN, 3.0]), "probe/x": torch.tensor(2.0),
                   "private": torch.tensor([9.0])})
    shared.update({"attn/entropy": torch.tensor([3.0, 5.0, NAN]), "probe/x": torch.tensor(NAN)})
    out = shared.compute_and_reset()
    assert set(out) == {"attn/entropy/layer0", "attn/entropy/layer1", "attn/entropy/layer2",
                        "attn/entropy/mean", "probe/x"}  # "private" has no "/": the plugin's own input
    assert_close(out["attn/entropy/layer0"], torch.tensor(2.0))
    assert_close(out["attn/entropy/layer1"], torch.tensor(5.0))
    assert_close(out["attn/entropy/layer2"], torch.tensor(3.0))
    assert_close(out["attn/entropy/mean"], torch.tensor(10 / 3))
    assert_close(out["probe/x"], torch.tensor(2.0))
    assert shared.compute_and_reset() == {}  # reset: nothing seen since


def test_all_nan_layers_and_bad_shapes():
    shared = SharedStats()
    shared.update({"attn/never": torch.full((3,), NAN), "mixer/lstm/gate": torch.tensor([NAN, 0.5])})
    assert set(shared.compute_and_reset()) == {"mixer/lstm/gate/layer1", "mixer/lstm/gate/mean"}
    with pytest.raises(ValueError, match="attn/never"):
        shared.update({"attn/never": torch.zeros(4)})  # the layer count changed between batches
    with pytest.raises(ValueError, match="per layer"):
        shared.update({"attn/map": torch.zeros(2, 2)})


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    yield
    wandb.teardown()


def test_core_logs_shared_stats_and_plugin_metric_names_as_given(monkeypatch, tmp_path, wandb_offline):
    core_fixture.registered(monkeypatch)
    cfg = compose_train(FAST + ["data=synthetic", "logger=wandb", "callbacks=none", "sample.prompt=null",
                                "plugin_metrics_every_n_steps=2"], tmp_path)
    with open_dict(cfg):
        cfg.model = core_fixture.model_config(cfg.data.vocab_size, cfg.data.seq_len)
    metrics = train(cfg)["metrics"]
    (run,) = read_runs(tmp_path, wait_s=30)
    keys = set(run.keys())

    # What the fixture's stats average to over the validation batches (debug=fast: the first 2).
    dm = build_datamodule(cfg.data, objective="causal_lm")
    dm.setup("fit")
    val = [b["input_ids"].float().mean() for _, b in zip(range(cfg.trainer.limit_val_batches), dm.val_dataloader())]
    m = torch.stack(val).mean().item()

    def last(key: str) -> float:
        return run.series(key, step_key="trainer/global_step")[-1][1]

    expected = {"attn/entropy/layer0": m, "attn/entropy/layer2": 2 * m, "attn/entropy/mean": 1.5 * m,
                "resid/rms/layer0": 1.0, "resid/rms/layer1": 2.0, "resid/rms/layer2": 3.0, "resid/rms/mean": 2.0,
                "probe/scalar": m, "fixture/private_m": m}
    for key, value in expected.items():
        assert math.isclose(last(key), value, rel_tol=1e-5), (key, last(key), value)
        assert math.isclose(metrics[key], value, rel_tol=1e-5), key
    # NaN layers are skipped; an all-NaN statistic logs nothing; names carry no extra plugin prefix.
    assert "attn/entropy/layer1" not in keys and not any(k.startswith("attn/never") for k in keys)
    assert not any(k.startswith(f"{core_fixture.NAME}/") for k in keys), sorted(keys)
    # Training steps (every plugin_metrics_every_n_steps) log the same keys under train/.
    for key in ("train/attn/entropy/layer0", "train/attn/entropy/mean", "train/resid/rms/mean",
                "train/probe/scalar", "train/fixture/private_m"):
        assert key in keys, (key, sorted(keys))
    assert "train/attn/entropy/layer1" not in keys
    train_rms = dict(run.series("train/resid/rms/mean", step_key="trainer/global_step"))
    assert {0, 2, 4} <= set(train_rms) and set(train_rms.values()) == {2.0}  # (Lightning repeats stale values)
    for key in ("train/loss", "train/lr", "train/grad_norm", "perf/tokens_per_sec", "val/loss"):
        assert key in keys, key
