"""The bert model: bidirectionality, padding invariance, token types, pooling, gradients, stats, config errors."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from framework import build_model
from framework.config_schema import ConfigError
from framework.nn.attention_stats import record_attention_stats
from framework.registry import get_plugin, make_config
from plugins.bert import Bert, BertConfig

FLAGS = [  # (position, pre_norm): every flag that changes the computation, and their combinations
    ("learned", False), ("learned", True), ("rope", False), ("rope", True),
]


def tiny(**overrides) -> Bert:
    base = dict(vocab_size=40, d_model=32, n_layers=2, n_heads=4, max_seq_len=24, dropout=0.0)
    return Bert(BertConfig(**(base | overrides))).eval()


def ids(batch: int = 2, seq: int = 16) -> torch.Tensor:
    return torch.randint(1, 40, (batch, seq))


@pytest.mark.parametrize("position, pre_norm", FLAGS)
def test_later_token_changes_earlier_outputs(position: str, pre_norm: bool) -> None:
    """Bidirectional: editing the last token moves every earlier position's logits (a causal model would not)."""
    model = tiny(position=position, pre_norm=pre_norm)
    x = ids()
    y = x.clone()
    y[:, -1] = (y[:, -1] % 39) + 1  # a different real token
    with torch.no_grad():
        a, b = model(x).logits, model(y).logits
    change = (a[:, :-1] - b[:, :-1]).abs().amax(-1)  # (B, T-1)
    assert (change > 1e-4).all(), change


@pytest.mark.parametrize("position, pre_norm", FLAGS)
def test_padding_never_changes_real_outputs(position: str, pre_norm: bool) -> None:
    """Real tokens' logits are the same however much padding follows them and whatever ids it holds."""
    model = tiny(position=position, pre_norm=pre_norm)
    x = ids(batch=1, seq=10)
    with torch.no_grad():
        alone = model(x).logits  # (1, 10, V): no padding, no mask
        for pad_len in (1, 6):
            for pad_id in (0, 7):
                padded = torch.cat([x, torch.full((1, pad_len), pad_id)], dim=1)
                mask = torch.cat([torch.ones(1, 10), torch.zeros(1, pad_len)], dim=1).long()
                got = model(padded, attention_mask=mask).logits[:, :10]
                assert_close(got, alone, rtol=1e-5, atol=1e-5)
        # Random junk in the padding of a 2-row batch changes nothing at the real tokens either.
        batch = torch.cat([x, x]).repeat(1, 2)  # (2, 20)
        batch[1, 10:] = torch.randint(1, 40, (10,))
        mask = torch.cat([torch.ones(2, 10), torch.zeros(2, 10)], dim=1).long()
        out = model(batch, attention_mask=mask).logits
        assert_close(out[0, :10], out[1, :10], rtol=1e-5, atol=1e-5)
        assert torch.isfinite(out).all()


def test_all_ones_mask_equals_no_mask() -> None:
    model = tiny()
    x = ids()
    with torch.no_grad():
        assert_close(model(x, attention_mask=torch.ones_like(x)).logits, model(x).logits, rtol=1e-5, atol=1e-5)


def test_token_types_change_outputs_and_default_to_zero() -> None:
    model = tiny()
    x = ids()
    with torch.no_grad():
        plain = model(x).logits
        zeros = model(x, token_type_ids=torch.zeros_like(x)).logits
        second = model(x, token_type_ids=(torch.arange(16) >= 8).long().expand(2, 16)).logits
    assert_close(plain, zeros)
    assert (plain - second).abs().max() > 1e-3
    without = tiny(type_vocab_size=0)
    with pytest.raises(ValueError, match="type_vocab_size=0"):
        without(x, token_type_ids=torch.zeros_like(x))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_encode_pools_one_vector_per_sequence_ignoring_padding(pooling: str) -> None:
    model = tiny(pooling=pooling)
    x = ids(batch=1, seq=8)
    padded = torch.cat([x, torch.full((1, 5), 3)], dim=1)
    mask = torch.cat([torch.ones(1, 8), torch.zeros(1, 5)], dim=1).long()
    with torch.no_grad():
        alone = model.encode(x)
        got = model.encode(padded, mask)
        h, _, _ = model.hidden_states(x)
    assert got.shape == (1, 32)
    assert_close(got, alone, rtol=1e-5, atol=1e-5)
    assert_close(alone, h[:, 0] if pooling == "cls" else h.mean(1))


def test_encode_pooling_argument_overrides_config() -> None:
    model = tiny(pooling="cls")
    x = ids()
    with torch.no_grad():
        assert not torch.allclose(model.encode(x, pooling="mean"), model.encode(x))
    with pytest.raises(ValueError, match="pooling"):
        model.encode(x, pooling="max")


@pytest.mark.parametrize("position, pre_norm", FLAGS)
def test_every_parameter_gets_a_gradient(position: str, pre_norm: bool) -> None:
    model = tiny(position=position, pre_norm=pre_norm).train()
    x = ids()
    out = model(x, attention_mask=torch.ones_like(x), token_type_ids=torch.ones_like(x))
    out.logits.float().logsumexp(-1).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mlm_head_is_tied_and_keeps_its_own_bias() -> None:
    model = tiny()
    assert model.mlm_head.decoder.weight is model.tok_emb.weight
    assert model.mlm_head.bias.shape == (40,)
    untied = tiny(tie_weights=False)
    assert untied.mlm_head.decoder.weight is not untied.tok_emb.weight
    n_tied = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in untied.parameters()) == n_tied + 40 * 32
    # The tie survives a state-dict round trip.
    fresh = tiny()
    fresh.load_state_dict(model.state_dict())
    assert fresh.mlm_head.decoder.weight is fresh.tok_emb.weight


def test_post_ln_is_bert_layout_and_pre_norm_adds_final_norm() -> None:
    post, pre = tiny(), tiny(pre_norm=True)
    assert isinstance(post.emb_norm, torch.nn.LayerNorm) and isinstance(post.final_norm, torch.nn.Identity)
    assert isinstance(pre.emb_norm, torch.nn.Identity) and isinstance(pre.final_norm, torch.nn.LayerNorm)
    assert not post.blocks[0].attn.causal


def test_dropout_only_acts_in_training() -> None:
    model = tiny(dropout=0.3)
    x = ids()
    with torch.no_grad():
        assert_close(model(x).logits, model(x).logits)
        model.train()
        assert not torch.allclose(model(x).logits, model(x).logits)


def test_forward_returns_stats_and_attention_stats_only_when_recording() -> None:
    model = tiny()
    x = ids()
    with torch.no_grad():
        out = model(x)
        assert out.stats["resid/rms"].shape == (2,) and "attn/entropy" not in out.stats
        assert_close(out.stats["attn/density"], torch.ones(2))  # dense attention
        assert out.aux_loss.item() == 0.0
        record_attention_stats(model, True)
        out = model(x, attention_mask=torch.ones_like(x))
        record_attention_stats(model, False)
    # The decoder stack's shared key scheme: one value per layer, logged by the core.
    assert set(out.stats) == {"resid/rms", "attn/density", "attn/entropy", "attn/topk_mass"}
    for key in ("attn/entropy", "attn/topk_mass"):
        assert out.stats[key].shape == (2,), key
    assert ((out.stats["attn/entropy"] > 0) & (out.stats["attn/entropy"] <= 1 + 1e-5)).all()
    assert ((out.stats["attn/topk_mass"] > 0) & (out.stats["attn/topk_mass"] <= 1 + 1e-5)).all()


def test_bidirectional_attention_stats_see_every_key() -> None:
    """With 8 keys and top-k = 8, a bidirectional layer puts all its mass in the top 8 (a causal one also
    would); with 16 keys, uniform attention gives normalised entropy 1."""
    model = tiny()
    with torch.no_grad():
        for block in model.blocks:  # zero queries: uniform attention over every allowed key
            block.attn.q_proj.weight.zero_()
            block.attn.q_proj.bias.zero_()
        record_attention_stats(model, True)
        stats = model(ids()).stats
        record_attention_stats(model, False)
    assert_close(stats["attn/entropy"], torch.ones(2))
    assert_close(stats["attn/topk_mass"], torch.full((2,), 8 / 16))  # a causal layer would give more


def test_sequence_past_position_table_raises() -> None:
    with pytest.raises(ValueError, match="max_seq_len"):
        tiny()(ids(seq=25))


def test_plugin_and_metrics_through_registry() -> None:
    plugin = get_plugin("bert")
    assert plugin.objective == "masked_lm"
    model = build_model("bert", vocab_size=50, d_model=16, n_heads=2, n_layers=3)
    assert isinstance(model, Bert) and model.tok_emb.num_embeddings == 50 and len(model.blocks) == 3
    # Attention and residual statistics are shared ones (attn/..., resid/rms) the core logs: a dense bert has
    # no metrics of its own; with ffn=moe, the routing metrics under bert/moe/.
    assert plugin.metrics(make_config("bert", n_layers=3)) == {}
    moe = plugin.metrics(make_config("bert", n_layers=3, ffn="moe"))
    assert moe and all(name.startswith("bert/moe/") for name in moe)


# --- bad config fails with a message naming the field ---------------------------------------------


def test_d_model_not_divisible_by_heads() -> None:
    with pytest.raises(ConfigError, match=r"d_model.*divisible by n_heads \(4\)"):
        make_config("bert", d_model=30, n_heads=4)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"dropout": 1.0}, "dropout"),
        ({"n_layers": 0}, "n_layers"),
        ({"type_vocab_size": -1}, "type_vocab_size"),
        ({"norm_eps": 0.0}, "norm_eps"),
        ({"position": "alibi"}, "position"),
        ({"pooling": "max"}, "pooling"),
        ({"activation": "tanh"}, "activation"),
        ({"position": "rope", "d_model": 12, "n_heads": 4}, "position"),
        ({"n_kv_heads": 2}, "n_kv_heads"),
    ],
)
def test_invalid_values_are_named(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make_config("bert", **overrides)
