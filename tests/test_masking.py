"""The BERT masking recipe (framework/data/masking.py) and the masked_lm batches of every data source."""
from __future__ import annotations

import pytest
import torch

from framework.data import DataConfigError, SyntheticDataModule, TextDataModule, build_datamodule
from framework.data.masking import (
    BYTE_MASK_ID, IGNORE, MaskedLMDataset, MaskingSpec, check_mask_rate, mask_tokens, synthetic_spec,
)
from framework.data.tasks import PAD, SEP
from hydra_compose import compose_train

SPEC = MaskingSpec(rate=0.15, mask_id=99, random_range=(2, 99), special_ids=(1,), pad_id=0)


def rows(n: int = 64, t: int = 40, pad_from: int = 30) -> torch.Tensor:
    ids = torch.randint(2, 99, (n, t))
    ids[:, 0] = 1  # a special token
    ids[:, pad_from:] = 0  # padding
    return ids


def test_labels_hold_originals_exactly_at_chosen_positions() -> None:
    ids = rows()
    out, labels = mask_tokens(ids, SPEC)
    chosen = labels != IGNORE
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(out[~chosen], ids[~chosen])  # nothing else is touched


def test_each_row_gets_round_rate_times_eligible_predictions() -> None:
    ids = rows()  # 29 eligible tokens per row: round(0.15 * 29) = 4
    _, labels = mask_tokens(ids, SPEC)
    assert ((labels != IGNORE).sum(-1) == 4).all()
    short = torch.tensor([[1, 5, 6, 0, 0]])  # 2 eligible: at least one prediction still
    _, labels = mask_tokens(short, SPEC)
    assert (labels != IGNORE).sum() == 1
    nothing = torch.tensor([[1, 0, 0, 99]])  # no eligible token: no prediction, no crash
    out, labels = mask_tokens(nothing, SPEC)
    assert (labels == IGNORE).all() and torch.equal(out, nothing)


def test_padding_special_and_mask_tokens_are_never_chosen() -> None:
    ids = rows(n=500)
    ids[:, 5] = 99  # an existing [MASK] id is not a prediction target either
    for _ in range(3):
        _, labels = mask_tokens(ids, SPEC)
        chosen = labels != IGNORE
        assert not chosen[:, 0].any() and not chosen[:, 5].any() and not chosen[:, 30:].any()


def test_80_10_10_split_of_chosen_tokens() -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 99, (2000, 100), generator=g)
    out, labels = mask_tokens(ids, SPEC, g)
    chosen = labels != IGNORE
    n = chosen.sum().item()
    assert n == 2000 * 15
    masked = (out == 99) & chosen
    unchanged = (out == ids) & chosen
    replaced = chosen & ~masked & ~unchanged
    # Random draws equal the original 1/97 of the time: those count as "unchanged".
    p_same = 0.1 / 97
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    assert abs(replaced.sum().item() / n - (0.1 - p_same)) < 0.01
    assert abs(unchanged.sum().item() / n - (0.1 + p_same)) < 0.01
    assert out[replaced].min() >= 2 and out[replaced].max() < 99  # regular tokens only


def test_chosen_positions_are_uniform_over_eligible_ones() -> None:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 99, (4000, 20), generator=g)
    _, labels = mask_tokens(ids, SPEC, g)
    per_position = (labels != IGNORE).float().mean(0)  # each position chosen 3/20 of the time
    assert (per_position - 0.15).abs().max() < 0.03


def test_rate_is_configurable() -> None:
    ids = torch.randint(2, 99, (8, 100))
    for rate in (0.05, 0.5, 0.9):
        _, labels = mask_tokens(ids, MaskingSpec(rate, 99, (2, 99)))
        assert ((labels != IGNORE).sum(-1) == round(rate * 100)).all()


def test_fixed_seed_fixes_masks_and_dynamic_masks_change() -> None:
    base = [{"input_ids": r} for r in rows(n=4)]
    fixed = MaskedLMDataset(base, SPEC, fixed_seed=3)
    a, b = fixed[2], fixed[2]
    assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["input_ids"], b["input_ids"])
    dynamic = MaskedLMDataset(base, SPEC)
    draws = {tuple((dynamic[0]["labels"] != IGNORE).nonzero().flatten().tolist()) for _ in range(10)}
    assert len(draws) > 1
    assert torch.equal(a["attention_mask"], (base[2]["input_ids"] != 0).long())
    negative = MaskedLMDataset(base, SPEC, fixed_seed=-5)  # seeds may be negative (text data allows it)
    assert torch.equal(negative[1]["labels"], negative[1]["labels"])


@pytest.mark.parametrize("bad", [0, 1, 0.0, 1.0, -0.1, 1.5, True, "0.15", None])
def test_mask_rate_outside_open_unit_interval_is_refused(bad) -> None:
    with pytest.raises(DataConfigError, match=r"data\.mask_rate must be a number strictly between 0 and 1"):
        check_mask_rate(bad)
    with pytest.raises(DataConfigError, match=r"data\.mask_rate"):
        SyntheticDataModule(objective="masked_lm", mask_rate=bad)
    with pytest.raises(DataConfigError, match=r"data\.mask_rate"):
        TextDataModule(objective="masked_lm", mask_rate=bad, max_bytes=10_000, seq_len=16, batch_size=2)


# --- datamodules -----------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["copy", "reverse", "sort", "mqar"])
def test_synthetic_masked_lm_batches(task: str) -> None:
    extra = dict(seq_len=32, vocab_size=40, num_kv=4) if task == "mqar" else dict(seq_len=16, length=7, vocab_size=12)
    dm = SyntheticDataModule(task=task, objective="masked_lm", n_train=64, n_val=32, batch_size=16, **extra)
    assert dm.mask_token_id == dm.vocab_size - 1 and dm.objective == "masked_lm"
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = next(iter(loader))
        assert set(batch) == {"input_ids", "attention_mask", "labels"}
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        chosen = labels != IGNORE
        assert chosen.any(-1).all()  # every example has something to predict
        assert int(ids.max()) < dm.vocab_size and int(labels[chosen].max()) < dm.mask_token_id
        assert (mask[ids == PAD] == 0).all() and (mask[ids != PAD] == 1).all()
        assert not chosen[mask == 0].any()
        if task != "mqar":
            assert not (labels == SEP).any() and ((ids == SEP).sum(-1) == 1).all()  # SEP stays in place
        assert ((ids == dm.mask_token_id) == (chosen & (ids == dm.mask_token_id))).all()


def test_synthetic_copy_keeps_the_causal_sequences() -> None:
    """masked_lm sees the same x SEP y rows as causal_lm (symbols drawn below [MASK])."""
    dm = SyntheticDataModule(task="copy", objective="masked_lm", seq_len=16, length=7, vocab_size=12, n_train=32,
                             n_val=8, batch_size=8)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    original = torch.where(batch["labels"] != IGNORE, batch["labels"], batch["input_ids"])
    unchanged = batch["labels"] == IGNORE
    x, sep, y = original[:, :7], original[:, 7], original[:, 8:15]
    assert (sep == SEP).all() and (original[:, 15] == PAD).all()
    both_visible = unchanged[:, :7] & unchanged[:, 8:15]
    assert torch.equal(x[both_visible], y[both_visible])
    assert synthetic_spec("copy", 0.15, 12).random_range == (2, 11)


@pytest.mark.parametrize("source", ["shakespeare", "pycode", "text"])
def test_text_masked_lm_batches(source: str, tmp_path) -> None:
    paths = None
    if source == "text":
        sample = tmp_path / "notes.txt"
        sample.write_text("héllo wörld, masked bytes — ünïcode too\n" * 100)
        paths = [str(sample)]
    dm = TextDataModule(source=source, paths=paths, objective="masked_lm", seq_len=32, batch_size=8,
                        max_bytes=200_000, val_windows=16)
    assert dm.mask_token_id == BYTE_MASK_ID == 255 and dm.vocab_size == 256
    assert int(dm.train_data.max()) < BYTE_MASK_ID  # 255 never occurs in UTF-8 text
    batch = next(iter(dm.train_dataloader()))
    ids, labels = batch["input_ids"], batch["labels"]
    chosen = labels != IGNORE
    assert ids.shape == labels.shape == batch["attention_mask"].shape == (8, 32)
    assert (batch["attention_mask"] == 1).all()  # windows are full: no padding
    assert (chosen.sum(-1) == round(0.15 * 32)).all()
    assert (ids[~chosen] != BYTE_MASK_ID).all() and (labels[chosen] < BYTE_MASK_ID).all()
    val_a = next(iter(dm.val_dataloader()))
    val_b = next(iter(dm.val_dataloader()))
    assert torch.equal(val_a["input_ids"], val_b["input_ids"])  # fixed validation masks


@pytest.mark.parametrize("option", ["shakespeare", "pycode", "synthetic", "text"])
def test_every_data_option_builds_masked_lm(option: str, tmp_path) -> None:
    extra = []
    if option == "text":
        sample = tmp_path / "corpus.txt"
        sample.write_text("to be or not to be, that is the question\n" * 200)
        extra = [f"data.paths=[{sample}]", "data.seq_len=32"]
    cfg = compose_train(["model=bert", f"data={option}", "data.mask_rate=0.3", *extra], tmp_path)
    dm = build_datamodule(cfg.data, objective="masked_lm")
    assert dm.objective == "masked_lm" and dm.mask_rate == 0.3
    batch = next(iter(dm.train_dataloader()))
    assert int(batch["input_ids"].max()) < cfg.model.vocab_size
    assert "attention_mask" in batch


def test_causal_lm_batches_are_unchanged() -> None:
    dm = SyntheticDataModule(n_train=32, n_val=8, batch_size=8)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "labels"} and dm.mask_token_id is None
