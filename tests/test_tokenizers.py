"""data.tokenizer: bytes | bpe | a tokenizer.json. BPE is deterministic, trained on the training split only and
cached; val/bpb is exact for both; the tokenizer travels in the checkpoint to generate and eval; bad values fail
early naming the field."""
from __future__ import annotations

import json
import math
import random

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from tokenizers import Tokenizer, models, pre_tokenizers

import framework.data.bpe as bpe
from framework.checkpoint import load_checkpoint
from framework.cli.eval import run_eval
from framework.cli.generate import run_generate
from framework.config_schema import ConfigError
from framework.data import DataConfigError, TextDataModule, build_datamodule
from framework.data.byte_level import byte_to_char
from framework.data.tokenizer import ByteTokenizer, save_hf_files, tokenizer_from_hparams
from framework.lit_module import ArchitectureModule
from framework.train import check_config, train
from hydra_compose import FAST, compose_train

WORDS = "the king queen crown sword café naïve smörgåsbord 日本語 speak thou art noble".split()
TINY_MODEL = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2"]


def words(n: int, seed: int, vocab: list[str] = WORDS) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(vocab) for _ in range(10)) for _ in range(n)) + "\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(words(300, seed=0), encoding="utf-8")
    return path


def text_data(path, cache, **options) -> TextDataModule:
    base = dict(source="text", paths=[str(path)], seq_len=16, batch_size=4, val_windows=None,
                tokenizer="bpe", vocab_size=400, tokenizer_dir=str(cache))
    return TextDataModule(**{**base, **options})


# --- the byte alphabet and the bpe recipe --------------------------------------------------------------------
def test_byte_alphabet_is_the_one_of_tokenizers_byte_level():
    assert set(byte_to_char().values()) == set(pre_tokenizers.ByteLevel.alphabet())
    # Every byte valid UTF-8 can hold, as the library's pre-tokenizer writes it.
    text = "".join(chr(c) for c in range(1, 0x3000, 7)) + "".join(chr(c) for c in range(0x10000, 0x10FFFF, 40_001))
    expected = "".join(byte_to_char()[b] for b in text.encode("utf-8"))
    got = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(text)[0][0]
    assert got == expected


def test_bpe_is_deterministic(tmp_path):
    text = words(200, seed=1)
    a = bpe.cached_bpe(text, 350, (), tmp_path / "a").read_bytes()
    b = bpe.cached_bpe(text, 350, (), tmp_path / "b").read_bytes()
    assert a == b and len(json.loads(a)["model"]["merges"]) > 10


def test_bpe_trains_on_the_training_split_only(tmp_path):
    train_text = words(120, seed=2)
    word = "xyzzyxzyxxyzzy"  # letters no training word has, repeated all over the validation text
    val_text = " ".join([word] * 150) + "\n"
    fraction = val_fraction(train_text, val_text)
    dm = text_data(write(tmp_path, train_text, val_text), tmp_path / "cache", val_fraction=fraction)
    assert dm.decode(dm.val_data) == val_text and len(dm.val_data) == len(val_text)  # one token per character
    vocab = tokenizer_vocab_bytes(dm.tokenizer.json)
    assert not [t for t in vocab if len(t) > 1 and set(t.decode("utf-8", "replace")) & set("xyz")]
    # The same recipe on all the text makes the word a token: the check above could fail.
    leaked = tokenizer_vocab_bytes(bpe.train_bpe(train_text + val_text, 400).to_str())
    assert any(word[:6].encode() in t for t in leaked)


def write(tmp_path, train_text: str, val_text: str):
    path = tmp_path / "c.txt"
    path.write_bytes((train_text + val_text).encode("utf-8"))
    return path


def val_fraction(train_text: str, val_text: str) -> float:
    """The data.val_fraction that cuts exactly between the two texts (just below: the split rounds down)."""
    return len(val_text.encode()) / len((train_text + val_text).encode()) - 1e-9


def tokenizer_vocab_bytes(tokenizer_json: str) -> list[bytes]:
    inverse = {c: b for b, c in byte_to_char().items()}
    return [bytes(inverse[c] for c in token) for token in json.loads(tokenizer_json)["model"]["vocab"]]


def test_second_build_reads_the_cache_and_other_settings_retrain(corpus, tmp_path, monkeypatch):
    first = text_data(corpus, tmp_path)
    (entry,) = list(tmp_path.glob("bpe-*/tokenizer.json"))
    mtime = entry.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr(bpe, "train_bpe", no_training)
    again = text_data(corpus, tmp_path)
    assert again.tokenizer.json == first.tokenizer.json and entry.stat().st_mtime_ns == mtime
    monkeypatch.undo()
    text_data(corpus, tmp_path, vocab_size=300)  # another setting: another entry
    assert len(list(tmp_path.glob("bpe-*/tokenizer.json"))) == 2


def test_token_bytes_are_exact_for_multibyte_text(corpus, tmp_path):
    dm = text_data(corpus, tmp_path)
    text = corpus.read_text(encoding="utf-8")
    ids = dm.tokenizer.encode_corpus(text).long()
    assert int(dm.token_bytes[ids].sum()) == len(text.encode("utf-8"))
    assert dm.tokenizer.decode(ids) == text
    for i in range(dm.tokenizer.vocab_size):  # whole characters: the library's own decoding agrees
        decoded = dm.tokenizer.decode([i])
        if "\ufffd" not in decoded:
            assert int(dm.token_bytes[i]) == len(decoded.encode("utf-8")), (i, decoded)


# --- val/bpb equals a hand computation ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bytes", "bpe"])
def test_val_bpb_equals_hand_computation(tmp_path, kind):
    # Multibyte training text (multibyte merges exist), ASCII validation text: a window's labels then decode
    # losslessly, so their bytes are counted by the library's decoder, independently of token_bytes.
    train_text, val_text = words(150, seed=3), words(50, seed=4, vocab="thou art noble the king".split())
    dm = text_data(write(tmp_path, train_text, val_text), tmp_path / "cache", tokenizer=kind,
                   vocab_size=256 if kind == "bytes" else 400, val_fraction=val_fraction(train_text, val_text))
    assert dm.decode(dm.val_data) == val_text
    vocab = dm.vocab_size
    module = ArchitectureModule("decoder", dict(vocab_size=vocab, d_model=32, n_layers=1, n_heads=2, max_seq_len=16),
                                attention_stats=False)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    logged = trainer.validate(module, datamodule=dm, verbose=False)[0]

    bits, n_bytes = 0.0, 0
    with torch.no_grad():
        for batch in dm.val_dataloader():
            logp = torch.log_softmax(module.model(batch["input_ids"]).logits.double(), -1)
            bits -= logp.gather(-1, batch["labels"][..., None]).sum().item() / math.log(2)
            n_bytes += sum(len(dm.tokenizer.decode(row).encode("utf-8")) for row in batch["labels"])
    assert logged["val/bpb"] == pytest.approx(bits / n_bytes, rel=1e-5)
    if kind == "bytes":
        assert logged["val/bpb"] == pytest.approx(logged["val/loss"] / math.log(2), rel=1e-5)
    else:  # BPE tokens hold more than a byte each: bits per byte < bits per token
        assert logged["val/bpb"] < logged["val/loss"] / math.log(2) / 1.5


# --- the tokenizer in the checkpoint: train -> generate, eval; mismatches --------------------------------------
@pytest.fixture(scope="module")
def bpe_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    data = ["data=text", f"data.paths=[{corpus}]", "data.tokenizer=bpe", "data.vocab_size=400", "data.seq_len=16",
            f"data.tokenizer_dir={out / 'tokenizers'}", "sample.prompt=null"]
    result = train(compose_train(FAST + TINY_MODEL + data, out / "run"))
    return out, data, result


def test_bpe_run_records_its_tokenizer_and_logs_bpb(bpe_run):
    out, _, result = bpe_run
    _, hparams = load_checkpoint(result["last_checkpoint"])
    (cached,) = list((out / "tokenizers").glob("bpe-*/tokenizer.json"))
    assert hparams["tokenizer"]["kind"] == "bpe" and hparams["tokenizer"]["tokenizer_json"] == cached.read_text()
    assert tokenizer_from_hparams(hparams).json == cached.read_text()
    assert tokenizer_from_hparams({"plugin_name": "decoder"}).kind == "bytes"  # older checkpoints: bytes
    assert 0 < result["metrics"]["val/bpb"] < result["metrics"]["val/loss"] / math.log(2)
    logged = (out / "run" / "csv" / "version_0" / "hparams.yaml").read_text()
    assert "tokenizer: bpe" in logged and "tokenizer_json" not in logged  # the loggers get the config, not the file


def test_generate_decodes_with_the_checkpoints_bpe(bpe_run, capsys):
    _, _, result = bpe_run
    model, hparams = load_checkpoint(result["last_checkpoint"])
    tok = tokenizer_from_hparams(hparams)
    prompt = "the king"
    assert tok.encode(prompt) != ByteTokenizer().encode(prompt)  # the bpe path is the one exercised
    assert run_generate([f"ckpt={result['last_checkpoint']}", f"prompt={prompt}", "max_new_tokens=12",
                         "temperature=0"]) == 0
    expected = model.generate(torch.tensor([tok.encode(prompt)]), max_new_tokens=12, temperature=0)[0]
    assert capsys.readouterr().out == tok.decode(expected) + "\n"


def test_eval_reports_the_training_bpb_and_refuses_another_tokenizer(bpe_run, capsys):
    _, _, result = bpe_run
    ckpt = result["last_checkpoint"]
    assert run_eval([f"ckpt={ckpt}", "json=true", "batches=2"]) == 0  # the run validated on 2 batches too
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["bits_per_byte"] == pytest.approx(result["metrics"]["val/bpb"], rel=1e-4)
    assert run_eval([f"ckpt={ckpt}", "data.tokenizer=bytes", "data.vocab_size=400"]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.tokenizer" in err and "bpe" in err and len(err.splitlines()) == 1


def test_resume_with_another_tokenizer_is_refused(bpe_run):
    out, data, _ = bpe_run
    bytes_data = [d for d in data if not d.startswith(("data.tokenizer=", "data.vocab_size="))]
    cfg = compose_train(FAST + TINY_MODEL + bytes_data + ["resume=true", "data.vocab_size=400"], out / "run")
    with pytest.raises(ConfigError, match=r"^data\.tokenizer: .*bpe"):
        check_config(cfg)


def test_a_users_tokenizer_json_and_hf_files(bpe_run, corpus, tmp_path):
    _, _, result = bpe_run
    tok = tokenizer_from_hparams(load_checkpoint(result["last_checkpoint"])[1])
    written = save_hf_files(tok, tmp_path / "hf")
    assert [p.name for p in written] == ["tokenizer.json", "tokenizer_config.json"]
    dm = text_data(corpus, tmp_path, tokenizer=str(written[0]))
    assert dm.tokenizer.kind == "file" and dm.encode("the king café") == tok.encode("the king café")
    # bytes as a Hugging Face tokenizer.json: exactly the UTF-8 bytes
    text = "thé 日本\n\x00 x"
    assert Tokenizer.from_str(ByteTokenizer().to_json()).encode(text).ids == list(text.encode("utf-8"))


# --- bad values fail early, naming the field ------------------------------------------------------------------
def test_masked_lm_bpe_reserves_mask_at_the_top(corpus, tmp_path):
    dm = text_data(corpus, tmp_path, objective="masked_lm")
    assert dm.mask_token_id == dm.tokenizer.vocab_size - 1 and dm.tokenizer.token_to_id("[MASK]") == dm.mask_token_id
    assert int(dm.train_data.max()) < dm.mask_token_id and int(dm.token_bytes[dm.mask_token_id]) == 0


@pytest.mark.parametrize("options, field", [
    (dict(tokenizer="foo"), "data.tokenizer"),
    (dict(tokenizer="/nonexistent/tokenizer.json"), "data.tokenizer"),
    (dict(tokenizer="bpe", vocab_size=256), "data.vocab_size"),
    (dict(tokenizer="bpe", vocab_size=257, objective="masked_lm"), "data.vocab_size"),
    (dict(tokenizer="bpe", vocab_size=400, objective="seq2seq"), "data.tokenizer"),
    (dict(_target_="framework.data.SyntheticDataModule", tokenizer="bpe"), "data.tokenizer"),
    (dict(_target_="framework.data.seq2seq.Seq2SeqDataModule", tokenizer="bpe"), "data.tokenizer"),
])
def test_bad_tokenizer_options_fail_naming_the_field(corpus, options, field):
    cfg = {"_target_": "framework.data.TextDataModule", "source": "text", "paths": [str(corpus)], "seq_len": 16}
    if options.get("_target_", cfg["_target_"]) != cfg["_target_"]:
        cfg = {}
    options = dict(options)
    objective = options.pop("objective", None)
    with pytest.raises(DataConfigError, match=rf"^{field}\b"):
        build_datamodule(OmegaConf.create({**cfg, **options}), objective=objective)


def test_tokenizer_files_that_do_not_fit_are_refused(corpus, tmp_path):
    saved, _ = save_hf_files(text_data(corpus, tmp_path).tokenizer, tmp_path)
    with pytest.raises(DataConfigError, match=r"^data\.vocab_size: 256 is smaller"):
        text_data(corpus, tmp_path, tokenizer=str(saved), vocab_size=256)
    word_level = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp_path / "words.json").write_text(word_level.to_str())
    with pytest.raises(DataConfigError, match=r"^data\.tokenizer: .* not a byte-level tokenizer"):
        text_data(corpus, tmp_path, tokenizer=str(tmp_path / "words.json"))
