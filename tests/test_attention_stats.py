"""The empirical attention-sparsity measure: exact on distributions we can compute by hand, and only
recorded when switched on."""
from __future__ import annotations

import math

import pytest
import torch

from framework import build_model
from framework.nn.attention_stats import record_attention_stats, sparsity_stats


def test_uniform_attention_has_full_entropy_and_k_over_n_topk_mass():
    q = torch.zeros(1, 2, 6, 4)  # zero queries: every allowed key scores the same
    k = torch.randn(1, 2, 10, 4)
    stats = sparsity_stats(q, k, bias=None, top_k=3)
    assert stats["entropy"].item() == pytest.approx(math.log(10), rel=1e-5)
    assert stats["entropy_norm"].item() == pytest.approx(1.0, rel=1e-5)
    assert stats["topk_mass"].item() == pytest.approx(3 / 10, rel=1e-5)


def test_causal_mask_and_peaked_attention():
    t = 5
    allowed = torch.ones(t, t, dtype=torch.bool).tril()
    bias = torch.zeros(t, t).masked_fill(~allowed, float("-inf"))[None, None]
    q = torch.zeros(1, 1, t, 2)
    k = torch.zeros(1, 1, t, 2)
    stats = sparsity_stats(q, k, bias, top_k=1)
    # Query i attends uniformly to i+1 keys: entropy log(i+1), normalised 1 (query 0: 1 by convention).
    expected_entropy = sum(math.log(i + 1) for i in range(t)) / t
    assert stats["entropy"].item() == pytest.approx(expected_entropy, rel=1e-5)
    assert stats["entropy_norm"].item() == pytest.approx(1.0, rel=1e-5)
    assert stats["topk_mass"].item() == pytest.approx(sum(1 / (i + 1) for i in range(t)) / t, rel=1e-5)
    # A huge score on one key: all mass there.
    q = torch.ones(1, 1, t, 2) * 100
    k = torch.zeros(1, 1, t, 2)
    k[..., 0, :] = 1.0
    peaked = sparsity_stats(q, k, bias, top_k=1)
    assert peaked["topk_mass"].item() == pytest.approx(1.0, abs=1e-4)
    assert peaked["entropy"].item() == pytest.approx(0.0, abs=1e-3)


def test_model_records_per_layer_stats_only_when_switched_on():
    model = build_model("decoder", vocab_size=16, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, max_seq_len=16,
                        position="rope").eval()
    x = torch.randint(0, 16, (2, 12))
    assert "attn/entropy" not in model(x).stats
    record_attention_stats(model, True)
    stats = model(x).stats
    assert stats["attn/entropy"].shape == (3,) and stats["attn/topk_mass"].shape == (3,)
    assert ((stats["attn/topk_mass"] > 0) & (stats["attn/topk_mass"] <= 1 + 1e-6)).all()
    logits_on = model(x).logits
    record_attention_stats(model, False)
    torch.testing.assert_close(model(x).logits, logits_on)  # measuring never changes the output
    assert "attn/topk_mass" not in model(x).stats


@pytest.mark.parametrize("name, parts", [
    ("bert", ("",)),  # an encoder: one value per layer, as the decoder stack's
    ("t5", ("/encoder", "/decoder", "/cross")),  # encoder-decoders: one key per attention
    ("transformer", ("/encoder", "/decoder", "/cross")),
])
def test_encoders_and_encoder_decoders_report_in_the_shared_key_scheme(name, parts):
    """One W&B panel (attn/entropy/..., resid/rms/...) compares every architecture: bert and the encoder-decoders
    report the decoder stack's keys, per layer, with normalised entropy in [0, 1]."""
    model = build_model(name, vocab_size=16, d_model=16, n_layers=2, n_heads=2, max_seq_len=16).eval()
    x = torch.randint(1, 16, (2, 10))
    inputs = {"input_ids": x} if name == "bert" else {"input_ids": x, "decoder_input_ids": x[:, :6]}
    record_attention_stats(model, True)
    stats = model(**inputs).stats
    record_attention_stats(model, False)
    for part in parts:
        for key in ("attn/entropy", "attn/topk_mass"):
            value = stats[f"{key}{part}"]
            assert value.shape == (2,) and ((value >= 0) & (value <= 1 + 1e-5)).all(), (key, part)
    resid = ("resid/rms",) if name == "bert" else ("resid/rms/encoder", "resid/rms/decoder")
    assert all(stats[key].shape == (2,) and (stats[key] > 0).all() for key in resid)
    assert not any("_attn_" in k or k == "residual_rms" for k in stats)  # the old private keys are gone
