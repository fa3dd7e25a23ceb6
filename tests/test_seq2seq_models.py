"""Properties both encoder-decoder plugins (t5, transformer) must have: decoder causality, an encoder
that ignores the decoder, padding that changes nothing, gradient flow, and stats for the metrics."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from framework.nn.attention_stats import record_attention_stats
from framework.registry import build_model

VOCAB = 20
TINY = {
    "t5": dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_decoder_layers=2, n_heads=4, d_ff=48,
               relative_buckets=8, relative_max_distance=16, max_seq_len=32),
    "t5_gated_untied": dict(vocab_size=VOCAB, d_model=32, n_layers=1, n_decoder_layers=2, n_heads=4, d_ff=48,
                            ffn="gated_gelu", tie_weights=False, max_seq_len=32),
    "transformer": dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_seq_len=32),
    "transformer_unshared": dict(vocab_size=VOCAB, d_model=32, n_layers=1, n_decoder_layers=2, n_heads=4, d_ff=48,
                                 share_embeddings=False, max_seq_len=32),
}
VARIANTS = list(TINY)


def make(variant: str) -> torch.nn.Module:
    plugin = "t5" if variant.startswith("t5") else "transformer"
    return build_model(plugin, **TINY[variant]).eval()


def batch(b: int = 2, s: int = 9, t: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(2, VOCAB, (b, s)), torch.randint(2, VOCAB, (b, t))


@pytest.mark.parametrize("variant", VARIANTS)
def test_decoder_is_causal(variant: str) -> None:
    model = make(variant)
    src, dec = batch()
    base = model(src, decoder_input_ids=dec).logits
    changed = dec.clone()
    changed[:, 4] = (changed[:, 4] + 1 - 2) % (VOCAB - 2) + 2  # another symbol at position 4
    out = model(src, decoder_input_ids=changed).logits
    assert_close(out[:, :4], base[:, :4])  # earlier positions cannot see position 4
    assert not torch.allclose(out[:, 4:], base[:, 4:])  # later ones do


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_output_is_independent_of_decoder_input(variant: str) -> None:
    model = make(variant)
    src, dec = batch()
    memory = model.encode(src)
    _, other = batch()
    assert_close(model.encode(src), memory)
    # The decoder reads the encoder: changing the last source token changes the first target logits.
    src2 = src.clone()
    src2[:, -1] = (src2[:, -1] - 2 + 1) % (VOCAB - 2) + 2
    first = model(src, decoder_input_ids=dec).logits[:, 0]
    assert not torch.allclose(model(src2, decoder_input_ids=dec).logits[:, 0], first)
    # Full forward = decode(encode(source)) whatever the decoder input.
    for d in (dec, other):
        assert_close(model(src, decoder_input_ids=d).logits, model.decode(d, memory, None))


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_never_changes_real_outputs(variant: str) -> None:
    """A short source, alone vs. padded with junk inside a batch; a target with padded tail."""
    model = make(variant)
    src, dec = batch(b=1, s=5, t=4)
    alone = model(src, decoder_input_ids=dec).logits
    junk = torch.randint(2, VOCAB, (1, 6))
    padded = torch.cat([src, junk], dim=1)  # (1, 11): 6 padded positions hold arbitrary ids
    mask = torch.cat([torch.ones(1, 5), torch.zeros(1, 6)], dim=1).long()
    dec_padded = torch.cat([dec, torch.randint(2, VOCAB, (1, 3))], dim=1)
    dec_mask = torch.cat([torch.ones(1, 4), torch.zeros(1, 3)], dim=1).long()
    out = model(padded, mask, dec_padded, dec_mask).logits
    assert_close(out[:, :4], alone, rtol=1e-5, atol=1e-5)
    # In a batch with a longer example, the short one is unchanged too.
    other_src, other_dec = batch(b=1, s=11, t=7)
    both = model(torch.cat([padded, other_src]), torch.cat([mask, torch.ones_like(mask)]),
                 torch.cat([dec_padded, other_dec]), torch.cat([dec_mask, torch.ones_like(dec_mask)])).logits
    assert_close(both[:1, :4], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_gets_a_gradient(variant: str) -> None:
    model = make(variant).train()
    src, dec = batch()
    out = model(src, torch.ones_like(src), dec)
    (out.logits.float().logsumexp(-1).mean() + out.aux_loss).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("variant", ["t5", "transformer"])
def test_attention_stats_are_recorded_only_on_request(variant: str) -> None:
    model = make(variant)
    src, dec = batch()
    mask = torch.ones_like(src)
    mask[0, 6:] = 0
    stats = model(src, mask, dec).stats
    assert not any(k.startswith("attn/") for k in stats)
    n_enc, n_dec = len(model.encoder), len(model.decoder)
    # The residual RMS after every block is there on every forward (shared keys: the core logs them).
    assert stats["resid/rms/encoder"].shape == (n_enc,) and stats["resid/rms/decoder"].shape == (n_dec,)
    record_attention_stats(model, True)
    stats = model(src, mask, dec).stats
    record_attention_stats(model, False)
    for part, n in (("encoder", n_enc), ("decoder", n_dec), ("cross", n_dec)):
        entropy, mass = stats[f"attn/entropy/{part}"], stats[f"attn/topk_mass/{part}"]
        assert entropy.shape == (n,) and mass.shape == (n,)
        assert ((entropy >= 0) & (entropy <= 1 + 1e-5)).all() and ((mass > 0) & (mass <= 1 + 1e-5)).all()
    assert not any("_attn_" in k or k.startswith(("enc_", "dec_self_", "cross_")) for k in stats)  # no private copies
    metrics = build_metrics(variant)
    for metric in metrics.values():
        metric.update(stats)
        metric.compute()


def build_metrics(variant: str) -> dict:
    from framework.registry import get_plugin, make_config
    plugin = get_plugin(variant)
    return plugin.metrics(make_config(variant, **TINY[variant]))


def test_attention_stats_respect_the_causal_and_padding_masks() -> None:
    """Decoder self-attention's first query sees one key (entropy 0, top-k mass 1); with one source
    key left, cross-attention is one-hot too."""
    model = make("transformer")
    src, dec = batch(b=1, t=1)
    mask = torch.zeros_like(src)
    mask[0, 0] = 1
    record_attention_stats(model, True)
    stats = model(src, mask, dec).stats
    assert_close(stats["attn/topk_mass/decoder"], torch.ones(len(model.decoder)))
    assert_close(stats["attn/topk_mass/cross"], torch.ones(len(model.decoder)))
    assert_close(stats["attn/entropy/cross"], torch.ones(len(model.decoder)))  # 1 key: defined as 1


@pytest.mark.parametrize(
    "plugin, overrides, field",
    [
        ("t5", dict(d_model=30, n_heads=4), "d_model"),
        ("transformer", dict(d_model=30, n_heads=4), "d_model"),
        ("t5", dict(ffn="swiglu"), "ffn"),
        ("t5", dict(relative_buckets=7), "relative_buckets"),
        ("t5", dict(relative_buckets=32, relative_max_distance=8), "relative_max_distance"),
        ("t5", dict(eos_token_id=300), "eos_token_id"),
        ("transformer", dict(dropout=-0.1), "dropout"),
        ("transformer", dict(n_decoder_layers=0), "n_decoder_layers"),
        ("transformer", dict(nonsense=1), "nonsense"),
    ],
)
def test_bad_config_fails_with_the_field_name(plugin: str, overrides: dict, field: str) -> None:
    from framework.config_schema import ConfigError

    with pytest.raises(ConfigError, match=field):
        build_model(plugin, **(dict(vocab_size=VOCAB) | overrides))


def test_label_smoothing_is_the_core_loss_option_not_a_transformer_field() -> None:
    from framework.config_schema import ConfigError

    # The core applies it (loss.label_smoothing, tests/test_core_loss.py); the model adds no aux term.
    with pytest.raises(ConfigError, match="label_smoothing"):
        build_model("transformer", **(TINY["transformer"] | {"label_smoothing": 0.1}))
    src, dec = batch()
    assert build_model("transformer", **TINY["transformer"]).train()(src, None, dec).aux_loss == 0
