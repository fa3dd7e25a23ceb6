"""Encoder-decoder plugins through the real loop: Hydra configs, train(), metrics, checkpoints,
``archlab generate``; span corruption on every text source; bad data config fails before training."""
from __future__ import annotations

import pytest

from framework.checkpoint import load_checkpoint
from framework.data import DataConfigError
from framework.cli.generate import run_generate
from framework.train import train
from hydra_compose import FAST, compose_train

SMALL = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "sample.prompt=null", "callbacks=default"]


@pytest.mark.parametrize("model", ["t5", "t5_v1_1", "transformer"])
def test_trains_on_synthetic_seq2seq_and_logs_plugin_metrics(model, tmp_path):
    cfg = compose_train(FAST + SMALL + [f"model={model}", "data=seq2seq", "data.task=addition", "data.length=3",
                                        "data.seq_len=8", "data.n_train=64", "data.n_val=16"], tmp_path)
    result = train(cfg)
    metrics = result["metrics"]
    for key in ("val/loss", "val/acc", "val/ppl", "val/exact_match"):
        assert key in metrics
    name = "t5" if model.startswith("t5") else "transformer"
    # Shared statistics, one key scheme for every architecture (the core logs them), no per-plugin copies.
    for part in ("encoder", "decoder", "cross"):
        assert 0 <= metrics[f"attn/entropy/{part}/mean"] <= 1 and f"attn/entropy/{part}/layer0" in metrics
        assert 0 < metrics[f"attn/topk_mass/{part}/mean"] <= 1
    assert metrics["resid/rms/encoder/layer0"] > 0 and metrics["resid/rms/decoder/mean"] > 0
    assert not any("attn" in k for k in metrics if k.startswith(f"{name}/"))
    if name == "t5":
        assert "t5/rel_bias_encoder/bucket0" in metrics and "t5/rel_bias_decoder/near_minus_far" in metrics
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("source", ["shakespeare", "pycode", "text"])
def test_t5_span_corruption_on_text_sources(source, tmp_path):
    extra = []
    if source == "text":
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("The quick brown fox jumps over the lazy dog.\n" * 200)
        extra = [f"data.paths=[{corpus}]"]
    cfg = compose_train(FAST + SMALL + ["model=t5", f"data={source}", "data.vocab_size=264", "data.seq_len=32",
                                        "data.max_bytes=200000"] + extra, tmp_path / "run")
    metrics = train(cfg)["metrics"]
    assert metrics["val/loss"] > 0 and "attn/entropy/cross/mean" in metrics


def test_generated_exact_match_callback(tmp_path):
    target = "+callbacks.generated_exact_match._target_=framework.seq2seq_callback.GeneratedExactMatch"
    cfg = compose_train(FAST + SMALL + ["model=transformer", "data=seq2seq", "data.n_train=64", "data.n_val=16",
                                        target], tmp_path)
    metrics = train(cfg)["metrics"]
    assert 0.0 <= metrics["val/generated_exact_match"] <= 1.0


def test_span_corruption_needs_room_for_sentinels(tmp_path):
    cfg = compose_train(FAST + SMALL + ["model=t5", "data=shakespeare", "data.seq_len=32"], tmp_path)
    with pytest.raises(DataConfigError, match="vocab_size"):
        train(cfg)


def test_synthetic_data_points_seq2seq_models_to_data_seq2seq(tmp_path):
    cfg = compose_train(FAST + SMALL + ["model=transformer", "data=synthetic"], tmp_path)
    with pytest.raises(DataConfigError, match="data=seq2seq"):
        train(cfg)


def test_inverse_sqrt_scheduler_config_trains(tmp_path):
    cfg = compose_train(FAST + SMALL + ["model=transformer", "data=seq2seq", "data.n_train=64", "data.n_val=16",
                                        "scheduler=inverse_sqrt", "scheduler.warmup_steps=3",
                                        "loss.label_smoothing=0.1", "model.dropout=0.1"], tmp_path)
    assert train(cfg)["metrics"]["val/loss"] > 0


def test_generate_cli_on_encoder_decoder_checkpoints(tmp_path, capsys):
    cfg = compose_train(FAST + SMALL + ["model=t5", "data=seq2seq", "data.n_train=64", "data.n_val=16"], tmp_path)
    train(cfg)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    model, hparams = load_checkpoint(ckpt)
    assert hparams["plugin_name"] == "t5" and model.is_encoder_decoder

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run_generate([f"ckpt={ckpt}", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    greedy = run("ids=5 3 9", "temperature=0", "max_new_tokens=6")
    beam1 = run("ids=5 3 9", "temperature=0", "max_new_tokens=6", "num_beams=1")
    beam3 = run("ids=5 3 9", "num_beams=3", "length_penalty=0.6", "max_new_tokens=6")
    assert greedy[0] == 0 and beam3[0] == 0, greedy[2] + beam3[2]
    assert greedy[1] == beam1[1]
    assert all(0 <= int(t) < 18 for t in greedy[1].split())
    code, _, err = run("prompt=hello")  # bytes are no tokens of this 18-symbol vocabulary
    assert code == 2 and "[0, 18)" in err
    code, _, err = run("ids=5 x")
    assert code == 2 and "ids" in err
