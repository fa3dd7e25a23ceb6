"""Encoder-decoder generation (framework/generation/seq2seq.py) with both plugins: beam size 1 is
greedy, the KV-cached path equals the uncached one, padding in a batch changes nothing, beam search
finds sequences at least as likely as greedy."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from framework.nn.cross_attention import DecoderCache
from framework.registry import build_model
from framework.generation import generate_seq2seq
from framework.generation.seq2seq import beam_search

VOCAB, EOS, PAD = 12, 1, 0
SIZES = dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_seq_len=32)


UNTIED = {"t5": dict(tie_weights=False), "transformer": dict(share_embeddings=False)}


@pytest.fixture(params=["t5", "transformer"])
def model(request):
    # An untied head with random weights: varied next-token distributions (a tied head at init mostly
    # repeats its input token), so greedy and beam search really differ.
    m = build_model(request.param, **SIZES, **UNTIED[request.param]).eval()
    with torch.no_grad():
        m.lm_head.weight.normal_(0.0, 0.3)
    return m


def sources(b: int = 3, s: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(2, VOCAB, (b, s))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    ids = ids.masked_fill(mask == 0, PAD)
    ids[0, -1], ids[1, 3], ids[2, -1] = EOS, EOS, EOS
    return ids, mask


def test_cached_decoding_equals_uncached(model) -> None:
    ids, mask = sources()
    for kwargs in (dict(), dict(num_beams=3), dict(num_beams=2, length_penalty=0.5)):
        cached = model.generate(ids, 12, attention_mask=mask, use_cache=True, **kwargs)
        uncached = model.generate(ids, 12, attention_mask=mask, use_cache=False, **kwargs)
        assert torch.equal(cached, uncached), kwargs


def test_cached_step_logits_equal_full_decoder_pass(model) -> None:
    ids, mask = sources()
    memory = model.encode(ids, mask)
    dec = torch.randint(2, VOCAB, (3, 6))
    full = model.decode(dec, memory, mask)  # (B, T, V)
    cache = model.new_cache()
    steps = [model.decode(dec[:, i : i + 1], memory, mask, cache) for i in range(6)]
    assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    assert isinstance(cache, DecoderCache) and cache.length == 6


def test_beam_size_one_is_greedy(model) -> None:
    """The beam search itself, run with one beam (``generate`` would route num_beams=1 to the greedy loop), with
    and without the cache, against greedy decoding."""
    ids, mask = sources()
    greedy = model.generate(ids, 12, attention_mask=mask)
    for use_cache in (True, False):
        beam = beam_search(model, ids, 12, num_beams=1, decoder_start_token_id=0, eos_token_id=EOS,
                           pad_token_id=PAD, attention_mask=mask, length_penalty=2.0, use_cache=use_cache)
        assert torch.equal(greedy, beam), use_cache
    direct = generate_seq2seq(model, ids, 12, decoder_start_token_id=0, eos_token_id=EOS, pad_token_id=PAD,
                              attention_mask=mask, num_beams=1, length_penalty=2.0)
    assert torch.equal(greedy, direct)


def test_batched_generation_equals_one_at_a_time(model) -> None:
    ids, mask = sources()
    for num_beams in (1, 3):
        batched = model.generate(ids, 10, attention_mask=mask, num_beams=num_beams)
        for i in range(3):
            n = int(mask[i].sum())
            alone = model.generate(ids[i : i + 1, :n], 10, num_beams=num_beams)
            assert torch.equal(batched[i, : alone.shape[1]], alone[0]), (num_beams, i)


def sequence_logprob(model, ids, mask, out: torch.Tensor) -> torch.Tensor:
    """Sum of log-probabilities of each generated row, up to and including its EOS."""
    dec = torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1)
    logp = model(ids, mask, dec).logits.log_softmax(-1).gather(-1, out[..., None])[..., 0]  # (B, T)
    after_eos = (out == EOS).long().cumsum(1) - (out == EOS).long() > 0
    return logp.masked_fill(after_eos, 0.0).sum(-1)


def test_beam_search_is_at_least_as_likely_as_greedy(model) -> None:
    torch.manual_seed(1)
    ids, mask = sources(b=3)
    greedy = model.generate(ids, 8, attention_mask=mask)
    beam = model.generate(ids, 8, attention_mask=mask, num_beams=4, length_penalty=0.0)  # rank by raw log-prob
    with torch.no_grad():
        g, b = sequence_logprob(model, ids, mask, greedy), sequence_logprob(model, ids, mask, beam)
    assert (b >= g - 1e-4).all(), (b, g)
    assert (b > g + 1e-3).any()  # the case is not trivial: beam search beats greedy somewhere


def test_padding_after_eos_and_sampling_is_seeded(model) -> None:
    ids, mask = sources()
    out = model.generate(ids, 15, attention_mask=mask)
    for row in out.tolist():
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1 :])
    g1, g2 = (torch.Generator().manual_seed(5) for _ in range(2))
    a = model.generate(ids, 8, attention_mask=mask, temperature=1.0, generator=g1)
    b = model.generate(ids, 8, attention_mask=mask, temperature=1.0, generator=g2)
    assert torch.equal(a, b)


def test_bad_generation_arguments() -> None:
    model = build_model("t5", **SIZES)
    ids, _ = sources()
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(ids, 4, num_beams=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(ids, 0)


def test_cli_text_goes_through_the_models_codec_else_bytes_and_sentinels() -> None:
    from framework.cli.generate import generate_encoder_decoder
    from framework.generation import ByteSentinelCodec

    codec = ByteSentinelCodec(vocab_size=300)
    assert codec.encode_prompt("hé") == list("hé".encode("utf-8"))
    assert codec.decode_target([104, 105, 299, 33, 298]) == "hi<S0>!<S1>"  # sentinel i = vocab_size - 1 - i
    model = build_model("t5", **SIZES)
    args = dict(max_new_tokens=6, temperature=0.0)
    as_ids = generate_encoder_decoder(model, dict(args, ids="5 3 9"))
    model.encode_prompt = lambda text: [5, 3, 9]  # a model's own codec (framework.generation.PromptCodec)
    model.decode_target = lambda ids: "|".join(map(str, ids))
    assert generate_encoder_decoder(model, dict(args, prompt="any text")) == as_ids.replace(" ", "|")
