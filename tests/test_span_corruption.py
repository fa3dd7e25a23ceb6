"""T5 span corruption (framework/data/span_corruption.py): the source and target together hold the
original text exactly once, noise density and mean span length as configured, sentinels from the top
of the vocabulary, and the text datamodules build seq2seq batches with it."""
from __future__ import annotations

import pytest
import torch

from framework.data import DataConfigError, TextDataModule
from framework.data.seq2seq import EOS, IGNORE
from framework.data.span_corruption import corrupt, corrupted_lengths, noise_mask, span_counts

VOCAB = 300


def reconstruct(source: list[int], target: list[int], vocab_size: int) -> list[int]:
    """Put each sentinel's span from the target back into the source."""
    spans: dict[int, list[int]] = {}
    current = None
    for t in target[:-1]:  # drop EOS
        if t >= 256:
            current = t
            spans[t] = []
        else:
            spans[current].append(t)
    out: list[int] = []
    for t in source[:-1]:
        out.extend(spans[t] if t >= 256 else [t])
    return out


@pytest.mark.parametrize("n", [16, 64, 129])
def test_source_and_target_rebuild_the_text(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    for _ in range(20):
        tokens = torch.randint(2, 256, (n,), generator=g)
        mask = noise_mask(n, 0.15, 3.0, g)
        source, target = corrupt(tokens, mask, VOCAB)
        assert reconstruct(source.tolist(), target.tolist(), VOCAB) == tokens.tolist()
        assert (len(source), len(target)) == corrupted_lengths(n)
        noise, spans = span_counts(n)
        assert int(mask.sum()) == noise
        starts = mask & ~torch.cat([torch.tensor([False]), mask[:-1]])
        assert int(starts.sum()) == spans and not mask[0]  # kept text comes first
        sentinels = [t for t in source.tolist() if t >= 256]
        assert sentinels == list(range(VOCAB - 1, VOCAB - 1 - spans, -1))  # <S0> = vocab_size - 1, ...
        assert source[-1] == EOS and target[-1] == EOS


def test_noise_density_and_mean_span_length_on_average() -> None:
    g = torch.Generator().manual_seed(0)
    n = 512
    masks = torch.stack([noise_mask(n, 0.15, 3.0, g) for _ in range(50)])
    assert abs(masks.float().mean().item() - 0.15) < 0.01
    starts = masks & ~torch.cat([torch.zeros(50, 1, dtype=torch.bool), masks[:, :-1]], dim=1)
    assert abs(masks.sum().item() / starts.sum().item() - 3.0) < 0.1
    assert len({tuple(m.nonzero().flatten().tolist()) for m in masks}) == 50  # spans are random


@pytest.mark.parametrize("source", ["shakespeare", "pycode", "text"])
def test_text_datamodules_build_seq2seq_batches(source: str, tmp_path) -> None:
    paths = None
    if source == "text":
        path = tmp_path / "mine.txt"
        path.write_text("Ünïcode and ascii text for the user source.\n" * 100, encoding="utf-8")
        paths = [str(path)]
    dm = TextDataModule(source=source, paths=paths, seq_len=64, vocab_size=VOCAB, batch_size=4,
                        max_bytes=100_000, objective="seq2seq")
    assert (dm.pad_token_id, dm.eos_token_id, dm.decoder_start_token_id) == (0, 1, 0)
    b = next(iter(dm.train_dataloader()))
    src_len, tgt_len = corrupted_lengths(64)
    assert b["input_ids"].shape == (4, src_len) and b["labels"].shape == (4, tgt_len)
    assert b["attention_mask"].all() and (b["labels"] != IGNORE).all()
    assert (b["decoder_input_ids"][:, 0] == 0).all() and torch.equal(b["decoder_input_ids"][:, 1:], b["labels"][:, :-1])
    # Validation noise is fixed per window; training noise is drawn afresh.
    v1, v2 = dm.val_dataset[0], dm.val_dataset[0]
    assert torch.equal(v1["input_ids"], v2["input_ids"])
    window = dm.val_dataset.windows[0]["input_ids"].tolist()
    assert reconstruct(v1["input_ids"].tolist(), v1["labels"].tolist(), VOCAB) == window
    draws = {tuple(dm.train_dataset[0]["labels"].tolist()) for _ in range(10)}
    assert len(draws) > 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(vocab_size=256), "vocab_size >= 259"), (dict(seq_len=4), "seq_len"),
    (dict(noise_density=1.5), r"data\.noise_density .* strictly between 0 and 1"),
    (dict(noise_density=0.0), r"data\.noise_density"),
    (dict(mean_span_length=0.5), r"data\.mean_span_length .* >= 1"),
])
def test_span_corruption_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(DataConfigError, match=match):
        TextDataModule(**(dict(source="shakespeare", seq_len=64, vocab_size=VOCAB, objective="seq2seq") | kwargs))


def test_noise_density_and_mean_span_length_are_data_keys() -> None:
    """data.noise_density / data.mean_span_length reach the corruption: dropped share and span count follow."""
    n, density, mean_span = 96, 0.3, 2.0
    dm = TextDataModule(source="shakespeare", seq_len=n, vocab_size=VOCAB, batch_size=2, max_bytes=50_000,
                        objective="seq2seq", noise_density=density, mean_span_length=mean_span)
    dm.setup()
    example = dm.val_dataset[3]
    noise, spans = span_counts(n, density, mean_span)
    assert (noise, spans) == (29, 14)  # round(96 * 0.3), round(29 / 2)
    labels = example["labels"]
    sentinels = (labels >= VOCAB - spans) & (labels < VOCAB)
    assert int(sentinels.sum()) == spans and len(labels) == noise + spans + 1  # + EOS
    assert reconstruct(example["input_ids"].tolist(), labels.tolist(), VOCAB) == dm.val_dataset.windows[3]["input_ids"].tolist()
