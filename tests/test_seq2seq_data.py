"""Synthetic seq2seq data (framework/data/seq2seq.py): exact answers, the documented batch format,
varying lengths, determinism and clear config errors."""
from __future__ import annotations

import pytest
import torch

from framework.data import DataConfigError
from framework.data.seq2seq import EOS, IGNORE, PAD, SEQ2SEQ_TASKS, Seq2SeqDataModule


def module(**kw) -> Seq2SeqDataModule:
    dm = Seq2SeqDataModule(**({"n_train": 64, "n_val": 32, "batch_size": 8} | kw))
    dm.setup()
    return dm


def pairs(dm: Seq2SeqDataModule) -> list[tuple[list[int], list[int]]]:
    """(source, target) token lists without EOS and padding, from the validation set."""
    t = dm.val_dataset.tensors
    out = []
    for src, mask, lab in zip(t["input_ids"], t["attention_mask"], t["labels"]):
        s = src[mask.bool()].tolist()
        y = lab[lab != IGNORE].tolist()
        assert s[-1] == EOS and y[-1] == EOS and EOS not in s[:-1] and EOS not in y[:-1]
        out.append((s[:-1], y[:-1]))
    return out


@pytest.mark.parametrize("task", SEQ2SEQ_TASKS)
def test_batch_format(task: str) -> None:
    dm = module(task=task, length=5, seq_len=12, vocab_size=14)
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask", "labels"}
    assert b["input_ids"].shape == (8, dm.source_len) and b["labels"].shape == (8, dm.target_len)
    assert max(dm.source_len, dm.target_len) <= dm.seq_len
    # Decoder input = start token, then the target shifted right.
    assert (b["decoder_input_ids"][:, 0] == dm.decoder_start_token_id).all()
    target = b["labels"].masked_fill(b["labels"] == IGNORE, PAD)
    assert torch.equal(b["decoder_input_ids"][:, 1:], target[:, :-1])
    assert torch.equal(b["decoder_attention_mask"].bool(), b["labels"] != IGNORE)
    # Source padding is right padding, exactly where the mask is 0.
    assert torch.equal(b["attention_mask"].bool(), b["input_ids"] != PAD)
    assert (b["attention_mask"].diff(dim=1) <= 0).all()
    assert (dm.pad_token_id, dm.eos_token_id, dm.decoder_start_token_id) == (0, 1, 0)


def test_answers_are_exact() -> None:
    for task, check in (
        ("copy", lambda x, y: y == x),
        ("reverse", lambda x, y: y == x[::-1]),
        ("sort", lambda x, y: y == sorted(x)),
    ):
        dm = module(task=task, length=6, seq_len=8)
        ps = pairs(dm)
        assert all(check(x, y) for x, y in ps), task
        lengths = {len(x) for x, _ in ps}
        assert min(lengths) == 1 and max(lengths) == 6  # lengths vary: batches carry real padding


def test_addition_is_arithmetic() -> None:
    dm = module(task="addition", length=4, seq_len=10, n_val=200)
    for x, y in pairs(dm):
        text = dm.decode(x)
        a, b = text.split("+")
        assert int(dm.decode(y)) == int(a) + int(b)
        assert dm.encode(dm.decode(x)) == x
    digits = {len(dm.decode(x).split("+")[0]) for x, _ in pairs(dm)}
    assert digits == {1, 2, 3, 4}


def test_same_seed_same_data_and_splits_differ() -> None:
    a, b, c = module(seed=3), module(seed=3), module(seed=4)
    assert torch.equal(a.val_dataset.tensors["input_ids"], b.val_dataset.tensors["input_ids"])
    assert not torch.equal(a.val_dataset.tensors["input_ids"], c.val_dataset.tensors["input_ids"])
    assert not torch.equal(a.val_dataset.tensors["input_ids"], a.train_dataset.tensors["input_ids"][:32])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(task="addition", vocab_size=12), "vocab_size"),
        (dict(task="reverse", length=8, seq_len=8), "seq_len"),
        (dict(task="addition", length=4, seq_len=9), "seq_len"),
        (dict(min_length=9, length=8), "min_length"),
        (dict(task="mqar"), "task"),
        (dict(objective="causal_lm"), "seq2seq"),
        (dict(batch_size=100, n_train=10), "batch_size"),
    ],
)
def test_bad_settings_fail_clearly(kwargs: dict, field: str) -> None:
    with pytest.raises(DataConfigError, match=field):
        Seq2SeqDataModule(**kwargs)
