"""t5 composes with the Mixture-of-Experts FFN by config (model.ffn=moe), in encoder and decoder."""
from __future__ import annotations

import torch

from framework import build_model, get_plugin, make_config
from framework.train import split_model_config
from hydra_compose import compose_train

BASE = dict(vocab_size=24, d_model=16, n_layers=2, n_heads=2, max_seq_len=16, dropout=0.0,
            ffn="moe", moe={"n_experts": 4, "top_k": 2})


def batch():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(2, 24, (2, 9), generator=g)
    mask = torch.ones_like(src)
    mask[1, 6:] = 0
    dec = torch.randint(2, 24, (2, 7), generator=g)
    return src, mask, dec


def test_moe_t5_sums_aux_losses_of_both_stacks_and_feeds_metrics():
    model = build_model("t5", **BASE)
    src, mask, dec = batch()
    out = model(src, mask, dec)
    n_blocks = len(model.encoder) + len(model.decoder)
    assert out.aux_loss > 0 and out.stats["moe_load"].shape == (n_blocks, 4)
    out.aux_loss.backward()
    for block in [*model.encoder, *model.decoder]:
        assert block.ffn.router.weight.weight.grad is not None
    metrics = get_plugin("t5").metrics(model.config)
    for metric in metrics.values():
        metric.update(out.stats)
    assert {f"layer{i}" for i in range(n_blocks)} < set(metrics["t5/moe/load_entropy"].compute())


def test_moe_t5_decoder_stays_causal_and_padding_is_ignored():
    model = build_model("t5", **BASE).eval()
    src, mask, dec = batch()
    base = model(src, mask, dec).logits
    later = dec.clone()
    later[:, 4:] = (later[:, 4:] + 1) % 22 + 2
    torch.testing.assert_close(model(src, mask, later).logits[:, :4], base[:, :4])
    padded = src.clone()
    padded[1, 6:] = 3  # different padding ids: real outputs must not change
    torch.testing.assert_close(model(padded, mask, dec).logits, base)


def test_moe_t5_cached_generation_equals_uncached():
    model = build_model("t5", **BASE).eval()
    src, mask, _ = batch()
    cached = model.generate(src, max_new_tokens=6, attention_mask=mask, use_cache=True)
    uncached = model.generate(src, max_new_tokens=6, attention_mask=mask, use_cache=False)
    assert torch.equal(cached, uncached)


def test_t5_moe_options_compose_from_the_command_line():
    cfg = compose_train(["model=t5", "data=seq2seq", "model.ffn=moe", "model.moe.n_experts=3", "model.moe.top_k=1"])
    name, values = split_model_config(cfg)
    model = get_plugin(name).build(make_config(name, **values))
    assert len(model.encoder[0].ffn.experts) == 3 and len(model.decoder[-1].ffn.experts) == 3
