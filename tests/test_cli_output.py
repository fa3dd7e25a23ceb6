"""What a user reads in the terminal: the step progress bar, no library noise in a run's output, and
`archlab plugins -v`."""
from __future__ import annotations

import logging
import re
import warnings
from types import SimpleNamespace

import pytest

from framework.config_schema import ConfigError
from framework.progress_bar import StepProgressBar, tokens_per_sec_text
from framework.train import check_run_options, train
from hydra_compose import FAST, compose_train


def fake_trainer(**overrides) -> SimpleNamespace:
    """What TQDMProgressBar reads of a Trainer during training, step-based by default."""
    values = dict(max_steps=3000, max_epochs=-1, global_step=0, current_epoch=0, num_training_batches=500,
                  is_global_zero=True, loggers=[], progress_bar_metrics={"train/loss": 2.5},
                  callback_metrics={"perf/tokens_per_sec": 12345.6}, sanity_checking=False)
    return SimpleNamespace(**{**values, **overrides})


def drive(bar: StepProgressBar, trainer: SimpleNamespace, steps: int) -> None:
    """on_train_start, then ``steps`` batches of one optimizer step each, the epoch ending after each 500."""
    bar._trainer = trainer
    bar.on_train_start(trainer, None)
    bar.on_train_epoch_start(trainer, None)
    for i in range(steps):
        trainer.global_step += 1
        bar.on_train_batch_end(trainer, None, None, None, i % 500)
        if (i + 1) % 500 == 0:
            bar.on_train_epoch_end(trainer, None)
            trainer.current_epoch += 1
            bar.on_train_epoch_start(trainer, None)


def test_step_bar_counts_optimizer_steps_out_of_max_steps_across_epochs(capsys):
    bar, trainer = StepProgressBar(refresh_rate=60), fake_trainer()
    drive(bar, trainer, 620)  # past an epoch boundary (500 batches): the count goes on, no "Epoch 1"
    out = capsys.readouterr().out
    assert bar.train_progress_bar.n == 600 and bar.train_progress_bar.total == 3000  # redrawn every 60 steps
    assert "step 600/3000" in out and "step 120/3000" in out and "Epoch" not in out
    assert "tok/s=12.3k" in out and "step/s" in out


def test_step_bar_resumes_at_the_checkpoint_step(capsys):
    bar = StepProgressBar(refresh_rate=10)
    drive(bar, fake_trainer(global_step=1200), 10)
    assert "step 1210/3000" in capsys.readouterr().out


def test_epoch_based_training_keeps_lightnings_bar(capsys):
    bar, trainer = StepProgressBar(refresh_rate=10), fake_trainer(max_steps=-1, max_epochs=3)
    drive(bar, trainer, 20)
    out = capsys.readouterr().out
    assert "Epoch 0" in out and "20/500" in out and "step " not in out and "tok/s" not in out


@pytest.mark.parametrize("rate, text", [(12345.6, "12.3k"), (987.0, "987"), (2.5e6, "2.5M")])
def test_tokens_per_sec_text(rate, text):
    assert tokens_per_sec_text(rate) == text


def test_bad_progress_bar_argument_fails_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"progress_bar\.refresh:"):
        check_run_options(compose_train(["+progress_bar.refresh=5"], tmp_path))


NOISE = ("litlogger", "TPU available", "LeafSpec", "does not have many workers", "anonymous setting")


def test_tiny_run_shows_steps_and_its_own_lines_but_no_library_noise(tmp_path, capfd, caplog):
    # 4 batches an epoch, 12 steps: the bar counts on across 3 epochs.
    cfg = compose_train(FAST + ["data=synthetic", "data.n_train=16", "trainer.max_steps=12",
                                "trainer.val_check_interval=4", "trainer.enable_progress_bar=true",
                                "progress_bar_refresh_rate=4", "trainer.log_every_n_steps=2", "sample.prompt=null",
                                "model.d_model=32", "model.n_layers=1", "model.n_heads=2"], tmp_path)
    caplog.set_level(logging.INFO)  # under pytest Lightning's lines reach the root logger, not its own handler
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning the run raises is recorded, except those silenced on purpose
        train(cfg)
    out, err = capfd.readouterr()
    text = (out + err + caplog.text).replace("\r", "\n")
    assert "step 8/12" in text and "step 12/12" in text and "tok/s=" in text
    assert "Validation DataLoader 0" in text and "val/loss=" in text  # the validation bar and its metrics still show
    assert "Seed set to 1337" in text and "GPU available: False, used: False" in text
    assert "`Trainer.fit` stopped: `max_steps=12` reached." in text
    assert not [n for n in NOISE if n in text], text
    assert not [str(w.message) for w in caught if any(n in str(w.message) for n in NOISE)]


def test_wandb_logger_no_longer_sends_the_deprecated_anonymous_setting(tmp_path):
    from framework.loggers import build_loggers

    (logger,) = build_loggers(compose_train(["logger=wandb"], tmp_path))
    assert "anonymous" not in logger._wandb_init and logger._experiment is None  # nothing started


def plugins_output(capsys, *args: str) -> list[str]:
    from framework.cli.plugins import print_plugins

    assert print_plugins(list(args)) == 0
    return capsys.readouterr().out.splitlines()


def section(lines: list[str], plugin: str) -> list[str]:
    """The lines of ``plugin``'s entry: from its header to the next plugin's (or the mixers')."""
    start = next(i for i, line in enumerate(lines) if re.match(rf"  {plugin}\s+\w+_lm|  {plugin}\s+seq2seq", line))
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"  \S", lines[i]) or not lines[i].startswith(" ")),
               len(lines))
    return lines[start:end]


def test_plugins_verbose_lists_fields_with_type_default_and_choices(capsys):
    from framework.stack.config import StackConfig

    decoder = section(plugins_output(capsys, "-v"), "decoder")
    fields = {m[1]: (m[2], m[3]) for line in decoder if (m := re.match(r"\s+([\w.]+)\s{2,}(\S+) = (.+)$", line))}
    assert fields["n_layers"] == ("int", str(StackConfig.n_layers))
    assert fields["norm"] == ("layernorm|rmsnorm|none", "layernorm")
    assert fields["n_kv_heads"] == ("int|null", "null")
    assert fields["moe.n_experts"] == ("int", "8")  # nested configs: one dotted line per field
    assert fields["moe.router"][0] == "token_choice|expert_choice"
    assert fields["vocab_size"] == ("int", "256 (follows data.vocab_size)")
    llama = next(i for i, line in enumerate(decoder) if re.match(r"\s+model=llama\s{2,}", line))
    assert "position=rope" in decoder[llama + 1] and "norm=rmsnorm" in decoder[llama + 1]  # what the preset changes
    assert any(line.strip().startswith("model=moe + ") for line in decoder)  # a preset built on another one


def test_plugins_without_verbose_is_unchanged_and_bad_arguments_fail(capsys):
    from framework.cli.plugins import print_plugins

    plain = plugins_output(capsys)
    assert not any("fields (" in line or " = " in line for line in plain)
    assert any("model=llama " in line for line in plain)
    assert print_plugins(["--bogus"]) == 2 and "usage: archlab plugins [-v]" in capsys.readouterr().err
