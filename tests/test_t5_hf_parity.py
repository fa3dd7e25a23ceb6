"""Numerical parity of the t5 plugin with Hugging Face ``T5ForConditionalGeneration`` at tiny size:
same weights copied across, ``assert_close`` on the logits, with source padding.

v1.0 (ReLU FFN, tied head with d_model^-0.5 output scaling) and v1.1 (gated GELU, untied head, no
scaling; Hugging Face 5.x always ties, so the untied head is given the embedding's values).
"""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from plugins.t5 import T5, T5Config
from plugins.t5.hf_convert import from_hf_state_dict

transformers = pytest.importorskip("transformers")

VOCAB, D_MODEL, N_HEADS, D_FF, ENC_LAYERS, DEC_LAYERS, BUCKETS, MAX_DIST = 64, 32, 4, 48, 2, 3, 8, 20


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_t5_logits_match_hugging_face(version: str) -> None:
    gated = version == "v1.1"
    hf_cfg = transformers.T5Config(
        vocab_size=VOCAB, d_model=D_MODEL, d_kv=D_MODEL // N_HEADS, d_ff=D_FF, num_layers=ENC_LAYERS,
        num_decoder_layers=DEC_LAYERS, num_heads=N_HEADS, relative_attention_num_buckets=BUCKETS,
        relative_attention_max_distance=MAX_DIST, dropout_rate=0.0, layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu" if gated else "relu", tie_word_embeddings=not gated,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    hf = transformers.T5ForConditionalGeneration(hf_cfg).eval()
    with torch.no_grad():  # larger random weights: logits far from uniform, so a swapped tensor shows
        for name, p in hf.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if "layer_norm" in name else 0.3 * torch.randn_like(p))
    ours = T5(T5Config(
        vocab_size=VOCAB, d_model=D_MODEL, n_layers=ENC_LAYERS, n_decoder_layers=DEC_LAYERS, n_heads=N_HEADS,
        d_ff=D_FF, relative_buckets=BUCKETS, relative_max_distance=MAX_DIST,
        ffn="gated_gelu" if gated else "relu", tie_weights=not gated,
    )).eval()
    state = from_hf_state_dict(hf.state_dict(), ours.config)
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected and not [m for m in missing if m != "lm_head.weight" or not ours.config.tie_weights]

    src = torch.randint(2, VOCAB, (3, 11))
    src_mask = torch.ones_like(src)
    src_mask[1, 7:] = 0  # unequal source lengths
    src_mask[2, 4:] = 0
    src = src.masked_fill(src_mask == 0, 0)
    dec = torch.randint(2, VOCAB, (3, 9))
    dec[:, 0] = 0
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=dec).logits
        got = ours(src, src_mask, dec).logits
    assert expected.abs().max() > 1.0  # the comparison is not between near-zero numbers
    assert_close(got, expected, rtol=1e-4, atol=1e-4)
