"""The data layer: batch format, task answers, determinism, splits, config errors, shipped YAML."""
from __future__ import annotations

from pathlib import Path

import hydra
import lightning.pytorch as pl
import pytest
import torch
from omegaconf import OmegaConf

from framework.data import ByteTokenizer, DataConfigError, SyntheticDataModule, TextDataModule, build_datamodule

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"
IGNORE = -100


def write(tmp_path: Path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def text_dm(path: str, **kw) -> TextDataModule:
    args = dict(source="text", paths=[path], seq_len=8, batch_size=4, val_windows=None)
    return TextDataModule(**{**args, **kw})


def synth(task: str, **kw) -> SyntheticDataModule:
    args = dict(task=task, seq_len=24, vocab_size=30, length=6, num_kv=3, n_train=64, n_val=16, batch_size=8)
    dm = SyntheticDataModule(**{**args, **kw})
    dm.setup("fit")
    return dm


def first_batches(dm: pl.LightningDataModule, n: int = 3) -> list[dict[str, torch.Tensor]]:
    it = iter(dm.train_dataloader())
    return [next(it) for _ in range(n)]


# --- tokenizer -------------------------------------------------------------------------------------------


def test_byte_tokenizer_round_trips_unicode_and_tolerates_padded_ids() -> None:
    tok = ByteTokenizer()
    text = "Wherefore art thou — Roméo? ✓"
    assert tok.vocab_size == 256
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(torch.tensor(tok.encode("ab"))) == "ab"
    assert tok.decode([104, 300, 105]) == "h\ufffdi"  # an id >= 256 from a padded vocabulary
    assert tok.decode([0xC3]) == "\ufffd"  # a cut-off UTF-8 sequence


# --- text ------------------------------------------------------------------------------------------------


def test_text_labels_are_the_next_bytes(tmp_path: Path) -> None:
    corpus = "".join(chr(ord("a") + i % 26) for i in range(500)) + "\n"
    dm = text_dm(write(tmp_path, "abc.txt", corpus))
    dm.setup("fit")
    data = corpus.encode()
    for i in range(len(dm.train_dataset)):
        s = int(dm.train_dataset.starts[i])
        item = dm.train_dataset[i]
        assert item["input_ids"].tolist() == list(data[s : s + 8])
        assert item["labels"].tolist() == list(data[s + 1 : s + 9])
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "labels"}
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 8)
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.long
    assert torch.equal(batch["labels"][:, :-1], batch["input_ids"][:, 1:])
    assert dm.objective == "causal_lm" and dm.vocab_size == 256 and dm.seq_len == 8
    assert dm.decode(dm.encode("héllo")) == "héllo"


def test_text_train_and_val_are_disjoint(tmp_path: Path) -> None:
    # The first 90% is 'a', the rest 'b': train windows (labels included) must never reach a 'b'.
    dm = text_dm(write(tmp_path, "ab.txt", "a" * 899 + "b" * 100 + "\n"), val_fraction=0.1)
    a, b = ord("a"), ord("b")
    train = torch.cat([torch.cat([x["input_ids"], x["labels"]]) for x in dm.train_dataloader()])
    val = torch.cat([torch.cat([x["input_ids"], x["labels"]]) for x in dm.val_dataloader()])
    assert (train == a).all()
    assert not (val == a).any() and (val == b).any()
    # Every training byte is a target exactly once per epoch (stride-seq_len windows).
    assert len(dm.train_dataset) == (len(dm.train_data) - 1) // 8


def test_text_order_is_fixed_by_seed(tmp_path: Path) -> None:
    path = write(tmp_path, "t.txt", "".join(str(i % 97) for i in range(3000)))
    same = [first_batches(text_dm(path, seed=3)) for _ in range(2)]
    other = first_batches(text_dm(path, seed=4))
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(*same))
    assert not all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(same[0], other))


def test_val_windows_are_capped_and_evenly_spaced(tmp_path: Path) -> None:
    dm = text_dm(write(tmp_path, "t.txt", "x" * 2000), val_windows=4)
    dm.setup()
    n_all = (len(dm.val_data) - 1) // 8
    starts = dm.val_dataset.starts.tolist()
    assert len(starts) == 4 and starts == sorted(set(starts))
    assert starts[0] == 0 and starts[-1] >= (n_all // 2) * 8  # spread over the split, not its head
    assert all(s % 8 == 0 for s in starts)  # aligned with the non-overlapping windows


def test_relative_paths_and_listconfig_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "rel.txt", "hello world " * 20)
    monkeypatch.chdir(tmp_path)
    dm = text_dm("rel.txt", paths=OmegaConf.create(["rel.txt", "rel.txt"]))
    assert dm.paths == [str(tmp_path / "rel.txt")] * 2
    assert len(dm.train_data) + len(dm.val_data) == 2 * 241  # each file ends with a newline


def test_shakespeare_is_loaded_once_and_is_the_plays() -> None:
    a = TextDataModule(source="shakespeare", seq_len=64, batch_size=2)
    b = TextDataModule(source="shakespeare", seq_len=32, batch_size=2, seed=1)
    assert a.train_data.data_ptr() == b.train_data.data_ptr()  # cached, not read again
    n = len(a.train_data) + len(a.val_data)
    assert 5_000_000 < n < 6_000_000
    assert "**HAMLET**" in a.decode(a.train_data) and "**ROMEO**" in a.decode(a.val_data)


def test_pycode_is_python_and_capped() -> None:
    dm = TextDataModule(source="pycode", max_bytes=100_000, seq_len=64, batch_size=2)
    n = len(dm.train_data) + len(dm.val_data)
    assert n == 100_000
    text = dm.decode(dm.train_data)
    assert "def " in text and "import " in text


# --- synthetic -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["copy", "reverse", "sort"])
def test_answer_tasks_label_only_correct_answers(task: str) -> None:
    dm = synth(task)
    n = dm.length
    for split in (dm.train_dataset, dm.val_dataset):
        ids, labels = split.tensors["input_ids"], split.tensors["labels"]  # (N, T)
        x = ids[:, :n]
        assert ((x >= 2) & (x < dm.vocab_size)).all()
        assert (ids[:, n] == 1).all()  # SEP
        assert (labels[:, :n] == IGNORE).all() and (labels[:, 2 * n :] == IGNORE).all()
        assert (ids[:, 2 * n + 1 :] == 0).all()  # padding after the answer
        y = labels[:, n : 2 * n]
        expected = {"copy": x, "reverse": x.flip(1), "sort": x.sort(dim=1).values}[task]
        assert torch.equal(y, expected)
        assert torch.equal(y[:, :-1], ids[:, n + 1 : 2 * n])  # labels are the next input tokens
    if task == "sort":
        assert (y[:, 1:] >= y[:, :-1]).all()
    if task == "reverse":
        assert not torch.equal(y, x)  # would pass vacuously for palindromes only


def test_mqar_labels_are_the_values_of_earlier_pairs() -> None:
    dm = synth("mqar", seq_len=32, vocab_size=64, num_kv=4, n_train=200)
    ids, labels = dm.train_dataset.tensors["input_ids"], dm.train_dataset.tensors["labels"]
    kv, half = dm.num_kv, dm.vocab_size // 2
    keys, values = ids[:, 0 : 2 * kv : 2], ids[:, 1 : 2 * kv : 2]
    assert ((keys >= 1) & (keys < half)).all() and ((values >= half) & (values < dm.vocab_size)).all()
    assert (labels[:, : 2 * kv] == IGNORE).all()
    assert ((labels != IGNORE).sum(dim=1) == kv).all()  # every key queried exactly once
    for b in range(len(ids)):
        pairs = dict(zip(keys[b].tolist(), values[b].tolist()))
        assert len(pairs) == kv  # distinct keys
        for t in (labels[b] != IGNORE).nonzero().flatten().tolist():
            assert t >= 2 * kv and (t - 2 * kv) % 2 == 0
            assert labels[b, t] == pairs[int(ids[b, t])]
    # Power-law gaps: queries cluster right after the context.
    query_pos = (labels != IGNORE).nonzero()[:, 1].float()
    assert query_pos.mean() < 2 * kv + (32 - 2 * kv) / 2


@pytest.mark.parametrize("task", ["copy", "reverse", "sort", "mqar"])
def test_synthetic_is_deterministic_and_splits_differ(task: str) -> None:
    kw = {"vocab_size": 40} if task == "mqar" else {}
    a, b, c = synth(task, seed=1, **kw), synth(task, seed=1, **kw), synth(task, seed=2, **kw)
    assert torch.equal(a.train_dataset.tensors["input_ids"], b.train_dataset.tensors["input_ids"])
    assert torch.equal(a.val_dataset.tensors["labels"], b.val_dataset.tensors["labels"])
    assert not torch.equal(a.train_dataset.tensors["input_ids"], c.train_dataset.tensors["input_ids"])
    assert not torch.equal(a.train_dataset.tensors["input_ids"][:16], a.val_dataset.tensors["input_ids"])
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(first_batches(a), first_batches(b)))
    batch = first_batches(a, 1)[0]
    assert batch["input_ids"].shape == batch["labels"].shape == (8, 24)


def test_synthetic_decode_is_readable_and_round_trips() -> None:
    dm = synth("copy", length=2, seq_len=6, vocab_size=10)
    ids = dm.train_dataset.tensors["input_ids"][0]
    text = dm.decode(ids)
    assert len(text.split()) == 6 and text.split()[2] == "|" and text.endswith(" .")
    assert dm.encode(text) == ids.tolist()


# --- config errors ---------------------------------------------------------------------------------------

SYNTH = dict(task="copy", seq_len=32, vocab_size=18, length=16, n_train=64, n_val=8, batch_size=8)
MQAR = {**SYNTH, "task": "mqar", "vocab_size": 64, "num_kv": 4}


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({**SYNTH, "task": "add"}, r"data\.task.*'copy'.*'mqar'"),
        ({**SYNTH, "length": 17}, r"data\.length.*<= 16"),
        ({**SYNTH, "vocab_size": 3}, r"data\.vocab_size"),
        ({**SYNTH, "seq_len": True}, r"data\.seq_len"),
        ({**SYNTH, "n_train": 0}, r"data\.n_train"),
        ({**SYNTH, "batch_size": 65}, r"data\.batch_size"),
        ({**SYNTH, "seed": -1}, r"data\.seed"),
        ({**MQAR, "vocab_size": 9}, r"data\.vocab_size.*num_kv=4.*>= 10"),
        ({**MQAR, "num_kv": 9}, r"data\.num_kv.*<= 8"),
    ],
)
def test_synthetic_errors_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(DataConfigError, match=field):
        SyntheticDataModule(**kwargs)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"source": "wiki"}, r"data\.source.*'shakespeare'"),
        ({"source": "text"}, r"data\.paths"),
        ({"source": "text", "paths": []}, r"data\.paths"),
        ({"source": "shakespeare", "paths": ["x.txt"]}, r"data\.paths.*source='text'"),
        ({"source": "text", "paths": ["{tmp}/missing.txt"]}, r"data\.paths.*not found.*missing\.txt"),
        ({"source": "text", "paths": ["{tmp}"]}, r"data\.paths.*not a regular file"),
        ({"source": "text", "paths": ["{tmp}/empty.txt"]}, r"data\.paths.*empty.*empty\.txt"),
        ({"source": "text", "paths": ["{tmp}/latin1.txt"]}, r"data\.paths.*latin1\.txt.*UTF-8.*byte offset 6"),
        ({"source": "text", "paths": ["{tmp}/ok.txt"], "seq_len": 190}, r"data\.seq_len.*train split.*<= 179"),
        ({"source": "text", "paths": ["{tmp}/ok.txt"], "seq_len": 30}, r"data\.seq_len.*val split.*<= 19"),
        ({"source": "text", "paths": ["{tmp}/ok.txt"], "seq_len": 0}, r"data\.seq_len.*>= 1"),
        ({"source": "text", "paths": ["{tmp}/ok.txt"], "val_fraction": 0}, r"data\.val_fraction"),
        ({"source": "text", "paths": ["{tmp}/ok.txt"], "val_fraction": 1.0}, r"data\.val_fraction"),
        ({"source": "text", "paths": ["{tmp}/ok.txt"], "val_fraction": "0.1"}, r"data\.val_fraction"),
        ({"source": "text", "paths": ["{tmp}/ok.txt"], "vocab_size": 255}, r"data\.vocab_size.*>= 256"),
        ({"source": "text", "paths": ["{tmp}/ok.txt"], "batch_size": 100}, r"data\.batch_size.*<= "),
        ({"source": "text", "paths": ["{tmp}/ok.txt"], "max_bytes": 0}, r"data\.max_bytes"),
        ({"source": "text", "paths": ["{tmp}/ok.txt"], "val_windows": 0}, r"data\.val_windows"),
    ],
)
def test_text_errors_name_the_field(tmp_path: Path, kwargs: dict, field: str) -> None:
    write(tmp_path, "empty.txt", b"")
    write(tmp_path, "latin1.txt", b"hello \xe9t\xe9")  # Latin-1 'été' after 6 ASCII bytes
    write(tmp_path, "ok.txt", "z" * 199 + "\n")  # 180 train bytes, 20 val bytes
    if "paths" in kwargs:
        kwargs = {**kwargs, "paths": [p.format(tmp=tmp_path) for p in kwargs["paths"]]}
    with pytest.raises(DataConfigError, match=field):
        TextDataModule(**{"seq_len": 8, "batch_size": 2, **kwargs})


# --- shipped configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shakespeare", "pycode", "text", "synthetic"])
def test_yaml_instantiates_with_hydra(tmp_path: Path, name: str) -> None:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    for key in ("_target_", "vocab_size", "seq_len", "batch_size", "seed"):
        assert key in cfg, f"{name}.yaml lacks {key}"
    assert cfg.num_workers == 0
    cfg.batch_size = 2
    if name == "text":
        cfg.paths = [write(tmp_path, "mine.txt", "some text of mine. " * 200)]
    if name == "pycode":
        cfg.max_bytes = 200_000
    if name == "synthetic":
        cfg.n_train, cfg.n_val = 32, 8
    dm = hydra.utils.instantiate(cfg)
    assert isinstance(dm, pl.LightningDataModule)
    assert dm.objective == "causal_lm"
    assert (dm.vocab_size, dm.seq_len) == (cfg.vocab_size, cfg.seq_len)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["labels"].shape == (2, cfg.seq_len)
    assert batch["input_ids"].max() < dm.vocab_size and batch["labels"].max() < dm.vocab_size
    assert (batch["labels"] != IGNORE).any()
    assert len(next(iter(dm.val_dataloader()))["input_ids"]) == 2
    assert isinstance(dm.decode(batch["input_ids"][0]), str)


def test_build_datamodule_unwraps_hydra_errors() -> None:
    cfg = OmegaConf.load(CONF / "text.yaml")  # paths: null
    with pytest.raises(DataConfigError, match=r"^data\.paths must list") as info:
        build_datamodule(cfg)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    cfg = OmegaConf.load(CONF / "synthetic.yaml")
    cfg.n_train, cfg.n_val = 32, 8
    assert build_datamodule(cfg).vocab_size == 18
