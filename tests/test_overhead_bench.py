"""``archlab bench overhead`` at a tiny size: the table's structure, and that the plain loop and archlab train
time the same steps and tokens (timings themselves are not checked)."""
from __future__ import annotations

import pytest

from framework.bench import run_bench
from framework.bench.overhead import OverheadConfig, parse_args, run

TINY = ["--steps", "3", "--warmup", "2", "--rounds", "2", "model.d_model=32", "model.n_layers=1", "model.n_heads=2",
        "data.max_bytes=40000", "data.batch_size=4", "data.seq_len=32", "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false", "callbacks=none"]


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    wandb = pytest.importorskip("wandb")
    for var, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_CONSOLE", "off")):
        monkeypatch.setenv(var, value)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    yield
    wandb.teardown()


def test_both_loops_time_the_same_steps_and_tokens(wandb_offline):
    bench = parse_args(TINY)
    assert bench == OverheadConfig(steps=3, warmup=2, rounds=2, overrides=TINY[6:])
    result = run(bench)
    assert len(result["plain"]) == len(result["archlab"]) == 2
    for plain, archlab in zip(result["plain"], result["archlab"]):
        assert plain.steps == archlab.steps == 3
        assert plain.tokens == archlab.tokens == 3 * 4 * 32  # 3 steps of 4 windows of 32 bytes
        assert plain.seconds > 0 and archlab.seconds > 0
        assert archlab.logged_tokens_per_s is not None and archlab.logged_tokens_per_s > 0  # read back from W&B
    assert [r["variant"] for r in result["rows"]] == ["plain PyTorch loop", "archlab train"]
    lo, hi = result["overhead_range"]
    assert lo <= result["overhead"] <= hi


def test_cli_prints_the_table_the_overhead_and_the_logged_rate(wandb_offline, capsys):
    assert run_bench(["overhead", *TINY[:4], "--rounds", "1", *TINY[6:]]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("variant"))
    for column in ("median step ms", "steps/s", "min", "max", "tokens/s (wall clock)", "logged perf/tokens_per_sec"):
        assert column in header
    assert any(line.startswith("plain PyTorch loop") for line in out.splitlines())
    assert any(line.startswith("archlab train") for line in out.splitlines())
    assert "overhead of archlab train (median step time):" in out and "logged perf/tokens_per_sec vs wall clock:" in out


def test_bad_settings_fail():
    with pytest.raises(ValueError, match="steps"):
        OverheadConfig(steps=0)


def test_progress_bar_redraws_every_n_steps_and_only_when_enabled():
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
    from omegaconf import OmegaConf

    from framework.progress_bar import StepProgressBar
    from framework.train import _progress_bar
    from hydra_compose import compose_train

    cfg = compose_train(["progress_bar_refresh_rate=25"])  # the shipped conf/train.yaml's progress_bar node
    (bar,) = _progress_bar(cfg, [])
    assert isinstance(bar, StepProgressBar) and isinstance(bar, TQDMProgressBar) and bar.refresh_rate == 25
    assert _progress_bar(cfg, [RichProgressBar()]) == []  # a bar configured in callbacks wins
    assert _progress_bar(OmegaConf.merge(cfg, {"progress_bar": None}), []) == []  # null: Lightning's own bar
    cfg.trainer.enable_progress_bar = False
    assert _progress_bar(cfg, []) == []  # Lightning refuses a bar callback when the bar is disabled
