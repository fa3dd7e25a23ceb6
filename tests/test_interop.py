"""Hugging Face in and out (``archlab export`` / ``archlab import``, framework/interop): round trips on tiny random
models built here and saved to temporary folders: archlab -> HF -> logits equal; HF -> archlab -> logits equal;
greedy generation after import equals HF ``generate``; refusals name the reason; fine-tuning starts from the
imported weights."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from framework.checkpoint import load_checkpoint
from framework.cli import main
from framework.config_schema import ConfigError
from framework.interop.export import export_hf, export_safetensors, load_safetensors
from framework.registry import get_plugin, make_config
from framework.train import train
from hydra_compose import FAST, compose_train

transformers = pytest.importorskip("transformers")
TOLERANCE = dict(rtol=1e-4, atol=1e-4)
V = 300  # above the 256 byte tokens, so an imported model can be fine-tuned on byte-level text

# archlab configs -> the Hugging Face architecture export must choose
OURS = {
    "gpt2": ("decoder", dict(d_model=32, n_layers=2, n_heads=4, max_seq_len=32)),
    "llama": ("decoder", dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48, max_seq_len=32,
                              position="rope", norm="rmsnorm", ffn="swiglu", bias=False, tie_weights=False)),
    "mixtral": ("decoder", dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48, max_seq_len=32,
                                position="rope", norm="rmsnorm", ffn="moe", bias=False, tie_weights=False,
                                moe=dict(n_experts=4, top_k=2))),
    "mamba": ("decoder", dict(d_model=32, n_layers=2, mixer="mamba", ffn="none", position="none", norm="rmsnorm",
                              bias=False)),
    "bert": ("bert", dict(d_model=32, n_layers=2, n_heads=4, max_seq_len=32, dropout=0.0)),
    "t5": ("t5", dict(d_model=32, n_layers=2, n_decoder_layers=1, n_heads=4, d_ff=48, ffn="gated_gelu")),
}


def randomize_(model: torch.nn.Module, std: float = 0.2) -> torch.nn.Module:
    """Weights far from their init, so logits are far from uniform and a swapped tensor cannot hide."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn_like(p))
    return model


def ours(kind: str) -> tuple[torch.nn.Module, dict]:
    plugin, values = OURS[kind]
    config = make_config(plugin, vocab_size=V, **values)
    model = randomize_(get_plugin(plugin).build(config)).eval()
    return model, {"plugin_name": plugin, "model_config": asdict(config)}


def probe(kind: str) -> dict[str, torch.Tensor]:
    ids = torch.randint(2, V, (2, 10))
    return {"input_ids": ids, "decoder_input_ids": torch.randint(2, V, (2, 7))} if kind == "t5" else {"input_ids": ids}


def logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("kind", list(OURS))
def test_export_loads_in_transformers_with_equal_logits(kind: str, tmp_path: Path) -> None:
    model, hparams = ours(kind)
    exported = export_hf(model, hparams, tmp_path / "hf")
    assert exported.model_type == kind
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == kind
    assert (tmp_path / "hf" / "model.safetensors").stat().st_size > 0
    hf = getattr(transformers, exported.auto_class).from_pretrained(tmp_path / "hf").eval()
    inputs = probe(kind)
    expected = logits(model, inputs)
    assert expected.std() > 0.5  # the comparison has teeth
    assert_close(logits(hf, inputs), expected, **TOLERANCE)


def assert_same_greedy_tokens(ours: torch.nn.Module, hf: torch.nn.Module, prompt: torch.Tensor, n: int) -> None:
    """Our KV-cached greedy decoding picks the tokens HF ``generate`` picks (with its own cache)."""
    with torch.no_grad():
        expected = hf.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                               min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(ours.generate(prompt, max_new_tokens=n, temperature=0), expected)


def _hf_llama(tie: bool = False) -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        tie_word_embeddings=tie, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return randomize_(transformers.LlamaForCausalLM(cfg)).eval()


def _hf_gpt2() -> torch.nn.Module:
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    return randomize_(transformers.GPT2LMHeadModel(cfg)).eval()


@pytest.fixture(scope="module")
def imported_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, Path]:
    """A tiny random Llama saved by transformers, then imported by the command line."""
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("llama")
    hf = _hf_llama()
    hf.save_pretrained(folder)
    assert main(["import", f"hf={folder}"]) == 0
    return hf, folder, folder / "archlab.ckpt"


def test_import_gives_hugging_face_logits_and_greedy_tokens(imported_llama) -> None:
    hf, _, ckpt = imported_llama
    model, hparams = load_checkpoint(ckpt)
    assert hparams["plugin_name"] == "decoder" and hparams["model_config"]["n_kv_heads"] == 2
    inputs = probe("llama")
    assert_close(logits(model, inputs), logits(hf, inputs), **TOLERANCE)
    assert_same_greedy_tokens(model, hf, torch.randint(0, V, (2, 5)), 8)


def test_import_then_export_is_the_same_hugging_face_model(imported_llama, tmp_path: Path) -> None:
    hf, _, ckpt = imported_llama
    assert main(["export", f"ckpt={ckpt}", "format=hf", f"out={tmp_path / 'again'}"]) == 0
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "again").eval()
    for key, value in hf.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_gpt2_import_and_generate_after_import(tmp_path: Path) -> None:
    hf = _hf_gpt2()
    hf.save_pretrained(tmp_path / "gpt2")
    assert main(["import", f"hf={tmp_path / 'gpt2'}", f"out={tmp_path / 'gpt2.ckpt'}"]) == 0
    model, hparams = load_checkpoint(tmp_path / "gpt2.ckpt")
    assert hparams["model_config"]["position"] == "learned" and model.lm_head.weight is model.tok_emb.weight
    assert_same_greedy_tokens(model, hf, torch.randint(0, V, (1, 4)), 6)


def test_fine_tuning_starts_from_the_imported_weights(imported_llama, tmp_path: Path) -> None:
    """``train ckpt_path=<imported>`` is a new run of the checkpoint's model (not of model=gpt, the default) from
    its weights: with a zero learning rate the trained weights are still the imported ones, step by step."""
    _, _, ckpt = imported_llama
    cfg = compose_train(FAST + [f"ckpt_path={ckpt}", "optimizer.lr=0.0", "optimizer.weight_decay=0.0",
                                "data.seq_len=32", "sample.prompt=null", "trainer.max_steps=2"], tmp_path / "run")
    result = train(cfg)
    tuned, hparams = load_checkpoint(result["last_checkpoint"])
    start, _ = load_checkpoint(ckpt)
    assert hparams["model_config"]["n_kv_heads"] == 2  # the imported Llama, not the default gpt preset
    for key, value in start.state_dict().items():
        assert torch.equal(tuned.state_dict()[key], value), key
    assert torch.load(result["last_checkpoint"], weights_only=True)["global_step"] == 2  # a fresh run's steps


def test_fine_tuning_applies_command_line_model_overrides(imported_llama) -> None:
    from framework.init_weights import initial_model_config

    _, _, ckpt = imported_llama
    cfg = compose_train([f"ckpt_path={ckpt}", "model.dropout=0.25"])
    plugin, config = initial_model_config(cfg, torch.load(ckpt, weights_only=True), explicit=["dropout"])
    assert plugin == "decoder" and config["dropout"] == 0.25 and config["position"] == "rope"


def test_safetensors_export_restores_tied_weights(tmp_path: Path) -> None:
    model, hparams = ours("gpt2")
    export_safetensors(model, hparams, tmp_path / "w.safetensors")
    state, metadata = load_safetensors(tmp_path / "w.safetensors")
    assert json.loads(metadata["archlab.tied"]) == {"lm_head.weight": "tok_emb.weight"}
    assert json.loads(metadata["archlab.model_config"])["d_model"] == 32
    own = model.state_dict()
    assert set(state) == set(own) and all(torch.equal(state[k], v) for k, v in own.items())


@pytest.mark.parametrize(("plugin", "values", "reason"), [
    ("decoder", dict(mixer="sliding_window"), "token mixers ['sliding_window']"),
    ("decoder", dict(layers=["attention", "lstm"], n_layers=2), "'lstm'"),
    ("decoder", dict(ffn="moe", position="rope", norm="rmsnorm", bias=False, moe=dict(n_shared_experts=1)),
     "Mixtral's router"),
    ("rnn_seq2seq", {}, "declares no hf_architectures"),
    ("t5", dict(ffn="moe"), "dense FFNs only"),
    ("t5", dict(tie_weights=False), "always ties T5's head"),
])
def test_export_without_a_counterpart_is_refused_with_the_reason(plugin: str, values: dict, reason: str,
                                                                  tmp_path: Path) -> None:
    config = make_config(plugin, **values)
    model = get_plugin(plugin).build(config)
    with pytest.raises(ConfigError, match="format=hf") as err:
        export_hf(model, {"plugin_name": plugin, "model_config": asdict(config)}, tmp_path / "out")
    assert reason in str(err.value)
    assert not (tmp_path / "out").exists()


def test_jamba_export_names_the_dt_b_c_norms(tmp_path: Path) -> None:
    config = make_config("decoder", d_model=32, n_layers=2, n_heads=4, mixer="mamba", ffn="swiglu", position="none",
                         norm="rmsnorm", bias=False, mixer_every={"name": "attention", "every": 2, "offset": 1})
    with pytest.raises(ConfigError, match="dt_layernorm"):
        export_hf(get_plugin("decoder").build(config), {"plugin_name": "decoder", "model_config": asdict(config)},
                  tmp_path / "out")


def test_import_refuses_what_it_cannot_express(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scaled = transformers.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                      num_attention_heads=4, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                                              "rope_theta": 1e4})
    transformers.LlamaForCausalLM(scaled).save_pretrained(tmp_path / "scaled")
    assert main(["import", f"hf={tmp_path / 'scaled'}"]) == 2
    assert "rope_type='linear'" in capsys.readouterr().err
    opt = transformers.OPTConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1, ffn_dim=64, num_attention_heads=4,
                                 word_embed_proj_dim=32)
    transformers.OPTForCausalLM(opt).save_pretrained(tmp_path / "opt")
    assert main(["import", f"hf={tmp_path / 'opt'}"]) == 2
    err = capsys.readouterr().err
    assert "model_type 'opt'" in err and "llama" in err and "mixtral" in err  # what is importable
    assert main(["import", f"hf={tmp_path}"]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert not any(tmp_path.rglob("archlab.ckpt"))


def test_existing_outputs_are_not_overwritten(imported_llama, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _, folder, ckpt = imported_llama
    before = ckpt.stat().st_mtime_ns
    assert main(["import", f"hf={folder}"]) == 2
    assert "overwrite=true" in capsys.readouterr().err and ckpt.stat().st_mtime_ns == before
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", f"ckpt={ckpt}", f"out={out}"]) == 2
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["export", f"ckpt={ckpt}", "format=onnx", f"out={tmp_path / 'x'}"]) == 2
    assert "format: 'onnx' is not one of hf, safetensors" in capsys.readouterr().err


@pytest.mark.parametrize(("preset", "model_type"), [
    ("gpt", "gpt2"), ("llama", "llama"), ("mixtral", "mixtral"), ("moe", "mixtral"), ("mamba", "mamba"),
    ("mamba2", "mamba2"), ("deepseek", "deepseek_v3"), ("bert", "bert"), ("t5", "t5"),
])
def test_presets_with_a_counterpart_export_as_it(preset: str, model_type: str, tmp_path: Path) -> None:
    """Each preset as shipped (conf/model/<preset>.yaml) exports to its Hugging Face architecture; export itself
    checks the written model's logits against ours on a probe batch (framework/interop/hf_models.py)."""
    from framework.train import split_model_config

    plugin, values = split_model_config(compose_train([f"model={preset}"]))
    config = make_config(plugin, **values)
    model = randomize_(get_plugin(plugin).build(config), std=0.05).eval()
    exported = export_hf(model, {"plugin_name": plugin, "model_config": asdict(config)}, tmp_path / preset)
    assert exported.model_type == model_type and exported.probe_difference < 1e-4
