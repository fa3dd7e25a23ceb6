"""The ``rnn_seq2seq`` plugin at tiny sizes: source padding, decoder causality, attention scores,
generation (carried decoder state vs recomputation, beam search), config validation, and learning
``reverse`` on the shared seq2seq data (framework/data/seq2seq.py)."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import framework
from framework.data.seq2seq import Seq2SeqDataModule
from plugins.rnn_seq2seq import RNNSeq2Seq, RNNSeq2SeqConfig

CELLS = ["elman", "lstm", "gru"]
ATTENTION = ["additive", "dot", "none"]
VOCAB = 20


def tiny_model(**overrides) -> RNNSeq2Seq:
    cfg = dict(vocab_size=VOCAB, d_model=12, hidden_size=10, n_layers=2, init_std=0.5)
    cfg.update(overrides)
    return RNNSeq2Seq(RNNSeq2SeqConfig(**cfg)).double().eval()


def source_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three right-padded sources of lengths 5, 3 and 6 (token ids >= 2, EOS-free is fine here)."""
    ids = torch.randint(2, VOCAB, (3, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    return ids * mask, mask


@pytest.mark.parametrize("bidirectional", [True, False], ids=["bi", "uni"])
@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize("cell", CELLS)
def test_source_padding_is_never_read(cell: str, attention: str, bidirectional: bool) -> None:
    """Extra padding (and what the padded positions hold) leaves the logits unchanged: the encoder is
    packed, attention is masked and the initial state averages real positions only."""
    model = tiny_model(cell=cell, attention=attention, bidirectional=bidirectional)
    ids, mask = source_batch()
    dec = torch.randint(2, VOCAB, (3, 4))
    ref = model(ids, mask, dec).logits
    noisy = torch.where(mask.bool(), ids, torch.randint(2, VOCAB, ids.shape))
    longer_ids = torch.cat([noisy, torch.randint(2, VOCAB, (3, 3))], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(3, 3, dtype=torch.long)], dim=1)
    assert_close(model(longer_ids, longer_mask, dec).logits, ref)
    # ...while a change to a real source token does change them.
    changed = ids.clone()
    changed[1, 0] = (changed[1, 0] - 1) % (VOCAB - 2) + 2
    assert not torch.allclose(model(changed, mask, dec).logits[1], ref[1])


@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize("cell", CELLS)
def test_decoder_is_causal(cell: str, attention: str) -> None:
    model = tiny_model(cell=cell, attention=attention)
    ids, mask = source_batch()
    dec = torch.randint(2, VOCAB, (3, 6))
    ref = model(ids, mask, dec).logits
    for t in range(5):
        other = dec.clone()
        other[:, t + 1 :] = (dec[:, t + 1 :] - 1) % (VOCAB - 2) + 2
        logits = model(ids, mask, other).logits
        assert_close(logits[:, : t + 1], ref[:, : t + 1])
        assert not torch.allclose(logits[:, t + 1 :], ref[:, t + 1 :])


@pytest.mark.parametrize("attention", ["additive", "dot"])
def test_attention_weights_follow_the_score_formulas(attention: str) -> None:
    model = tiny_model(attention=attention, bidirectional=True)
    ids, mask = source_batch()
    memory = model.encode(ids, mask)  # (B, S, 2H)
    s = torch.randn(3, 4, 10, dtype=torch.float64)
    weights = model.attention(s, memory, mask)
    keys = memory @ model.attention.key.weight.T  # (B, S, H)
    if attention == "dot":
        scores = torch.einsum("bth,bsh->bts", s, keys)
    else:
        q = s @ model.attention.query.weight.T + model.attention.query.bias
        scores = torch.tanh(q[:, :, None] + keys[:, None]) @ model.attention.v.weight[0]
    scores = scores.masked_fill(~mask.bool()[:, None], float("-inf"))
    assert_close(weights, scores.softmax(-1))
    assert (weights[1, :, 3:] == 0).all()


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_reach_every_parameter(cell: str) -> None:
    model = tiny_model(cell=cell, dropout=0.1, share_embeddings=False).train()
    ids, mask = source_batch()
    model(ids, mask, torch.randint(2, VOCAB, (3, 4))).logits.logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_weight_sharing_options() -> None:
    model = tiny_model()
    assert model.tgt_embed is model.src_embed and model.head.weight is model.tgt_embed.weight
    model = tiny_model(share_embeddings=False, tie_weights=False)
    assert model.tgt_embed is not model.src_embed and model.head.weight is not model.tgt_embed.weight


@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize("cell", CELLS)
def test_generation_with_carried_state_equals_recomputation(cell: str, attention: str) -> None:
    """Greedy and beam decoding with the decoder state carried step by step equal re-running the decoder
    over the whole prefix at every step; greedy equals teacher-forced argmax on its own output; one beam
    is greedy."""
    model = tiny_model(cell=cell, attention=attention, init_std=1.0)
    ids, mask = source_batch()
    greedy = model.generate(ids, max_new_tokens=7, attention_mask=mask)
    assert torch.equal(greedy, model.generate(ids, max_new_tokens=7, attention_mask=mask, use_cache=False))
    assert torch.equal(greedy, model.generate(ids, max_new_tokens=7, attention_mask=mask, num_beams=1))
    beam = model.generate(ids, max_new_tokens=7, attention_mask=mask, num_beams=3)
    assert torch.equal(beam, model.generate(ids, max_new_tokens=7, attention_mask=mask, num_beams=3, use_cache=False))
    # Teacher forcing on the greedy output reproduces it (up to the first EOS of each row).
    dec = torch.cat([torch.zeros(3, 1, dtype=torch.long), greedy[:, :-1]], dim=1)
    forced = model(ids, mask, dec).logits.argmax(-1)
    for row in range(3):
        out = greedy[row].tolist()
        n = out.index(1) + 1 if 1 in out else len(out)
        assert forced[row, :n].tolist() == out[:n]


def test_beam_search_scores_at_least_greedy() -> None:
    """Without length normalisation (length_penalty=0) the beam's summed log-probability (up to and
    including EOS) is never below greedy's: the greedy path survives in the beam or is beaten."""
    model = tiny_model(init_std=1.0)
    ids, mask = source_batch()

    def score(out: torch.Tensor) -> torch.Tensor:
        dec = torch.cat([torch.zeros(3, 1, dtype=torch.long), out[:, :-1]], dim=1)
        logp = model(ids, mask, dec).logits.log_softmax(-1).gather(-1, out[..., None]).squeeze(-1)  # (B, T)
        after_eos = (out == 1).long().cumsum(-1) - (out == 1).long() > 0  # positions after the first EOS
        return logp.masked_fill(after_eos, 0.0).sum(-1)

    greedy = model.generate(ids, max_new_tokens=6, attention_mask=mask)
    beam = model.generate(ids, max_new_tokens=6, attention_mask=mask, num_beams=4, length_penalty=0.0)
    assert (score(beam) >= score(greedy) - 1e-9).all()


BAD_CONFIGS = [
    (dict(attention="luong"), "attention"),
    (dict(cell="transformer"), "cell"),
    (dict(dropout=-0.1), "dropout"),
    (dict(n_layers=0), "n_layers"),
    (dict(eos_token_id=99), "eos_token_id"),
    (dict(beam=4), "unknown field"),
]


@pytest.mark.parametrize("overrides,field", BAD_CONFIGS, ids=[f for _, f in BAD_CONFIGS])
def test_invalid_config_fails_early_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(framework.ConfigError, match=field):
        framework.make_config("rnn_seq2seq", **overrides)


def test_forward_needs_decoder_inputs() -> None:
    with pytest.raises(ValueError, match="decoder_input_ids"):
        tiny_model()(torch.randint(2, VOCAB, (1, 3)))


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["additive", "dot"])
def test_learns_short_reverse(attention: str, tmp_path) -> None:
    """rnn_seq2seq with attention on data=seq2seq reverse of up to 6 symbols: >= 95% exact match, both
    teacher-forced (val/exact_match) and decoded greedily and with beam search from the sources alone."""
    from hydra_compose import compose_train

    from framework.checkpoint import load_checkpoint
    from framework.data.build import build_datamodule
    from framework.train import train

    overrides = [
        "model=rnn_seq2seq", f"model.attention={attention}", "model.d_model=64", "data=seq2seq", "data.task=reverse",
        "data.length=6", "data.seq_len=8", "data.vocab_size=12", "data.n_train=4000", "data.n_val=256",
        "data.batch_size=32", "optimizer.lr=3e-3", "optimizer.weight_decay=0.0", "trainer.max_steps=300",
        "trainer.val_check_interval=300", "trainer.enable_progress_bar=false", "logger=csv",
        "sample.prompt=null",
    ]
    cfg = compose_train(overrides, tmp_path)
    result = train(cfg)
    assert result["metrics"]["val/exact_match"] >= 0.95, result["metrics"]
    # Decoding from the sources alone, with the trained weights of the final checkpoint.
    model, _ = load_checkpoint(result["last_checkpoint"])
    dm: Seq2SeqDataModule = build_datamodule(cfg.data, objective="seq2seq")
    dm.setup()
    batch = dm.val_dataset.tensors
    for beams in (1, 3):
        out = model.generate(batch["input_ids"], max_new_tokens=dm.target_len, attention_mask=batch["attention_mask"],
                             num_beams=beams)
        target = batch["labels"].masked_fill(batch["labels"] == -100, 0)
        exact = (out[:, : target.shape[1]] == target).all(-1).float().mean().item()
        assert exact >= 0.95, (beams, exact)
