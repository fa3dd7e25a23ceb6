"""T5 specifics: the relative-position buckets match Hugging Face's, one bias table per stack is shared
by all its layers, the decoder's bias follows the cache offset, and relative positions make the
encoder shift-equivariant."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from plugins.t5.relative_position import RelativePositionBias, relative_position_bucket
from plugins.t5 import T5, T5Config


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("buckets, max_distance", [(32, 128), (8, 20), (6, 7)])
def test_buckets_match_hugging_face(bidirectional: bool, buckets: int, max_distance: int) -> None:
    transformers = pytest.importorskip("transformers")
    hf_bucket = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
    rel = torch.arange(-300, 301)[None, :]
    ours = relative_position_bucket(rel, bidirectional, buckets, max_distance)
    assert torch.equal(ours, hf_bucket(rel, bidirectional=bidirectional, num_buckets=buckets, max_distance=max_distance))
    assert ours.min() >= 0 and ours.max() < buckets


def test_decoder_buckets_never_look_ahead_and_far_offsets_share_the_last_bucket() -> None:
    rel = torch.arange(-200, 201)
    b = relative_position_bucket(rel, bidirectional=False, num_buckets=32, max_distance=128)
    assert (b[rel >= 0] == 0).all()  # self and future keys (masked anyway) share bucket 0
    assert (b[rel <= -128] == 31).all()
    assert torch.equal(b[(rel < 0) & (rel > -16)], torch.arange(15, 0, -1))  # 16 exact buckets for near offsets
    assert (b[:-1] >= b[1:]).all()  # monotone in distance


def test_one_bias_table_per_stack_shared_by_every_layer() -> None:
    model = T5(T5Config(vocab_size=16, d_model=32, n_layers=3, n_heads=4))
    tables = [n for n, _ in model.named_parameters() if "bias" in n]
    assert tables == ["enc_bias.embedding.weight", "dec_bias.embedding.weight"]
    assert not any(p.numel() and n.endswith(".bias") for n, p in model.named_parameters())  # T5 has no biases


def test_cached_decoder_bias_uses_absolute_query_positions() -> None:
    bias = RelativePositionBias(n_heads=2, num_buckets=8, max_distance=16, bidirectional=False)
    full = bias(5, 5)  # (1, H, 5, 5)
    for q in range(5):
        assert_close(bias(1, q + 1, offset=q), full[:, :, q : q + 1, : q + 1])


def test_encoder_is_shift_equivariant() -> None:
    """Only relative positions enter T5: a source and the same source with tokens prepended give
    the same encoder outputs on the shared part once attention to the prefix is masked."""
    model = T5(T5Config(vocab_size=16, d_model=32, n_layers=2, n_heads=4)).eval()
    src = torch.randint(2, 16, (1, 6))
    prefixed = torch.cat([torch.randint(2, 16, (1, 3)), src], dim=1)
    mask = torch.cat([torch.zeros(1, 3), torch.ones(1, 6)], dim=1).long()
    assert_close(model.encode(prefixed, mask)[:, 3:], model.encode(src), rtol=1e-5, atol=1e-5)


def test_relative_bias_usage_stats_and_metric() -> None:
    from plugins.t5.metrics import t5_metrics

    cfg = T5Config(vocab_size=16, d_model=32, n_layers=1, n_heads=4, relative_buckets=8, relative_max_distance=16)
    model = T5(cfg)
    stats = model(torch.randint(2, 16, (2, 5)), decoder_input_ids=torch.zeros(2, 3, dtype=torch.long)).stats
    assert stats["rel_bias_encoder"].shape == (8,)
    assert_close(stats["rel_bias_encoder"], model.enc_bias.embedding.weight.detach().mean(-1))
    metric = t5_metrics(cfg)["t5/rel_bias_encoder"]
    metric.update(stats)
    out = metric.compute()
    assert set(out) == {f"bucket{i}" for i in range(8)} | {"near_minus_far"}
