"""bert composes with the Mixture-of-Experts FFN by config (model.ffn=moe)."""
from __future__ import annotations

import torch

from framework import build_model, get_plugin, make_config
from framework.train import split_model_config
from hydra_compose import compose_train

BASE = dict(vocab_size=32, d_model=16, n_layers=2, n_heads=2, max_seq_len=16, d_ff=24, dropout=0.0)


def test_one_gelu_expert_equals_dense_bert():
    dense = build_model("bert", **BASE).eval()
    moe = build_model("bert", **BASE, ffn="moe", moe={"n_experts": 1, "top_k": 1, "activation": "gelu", "bias": True}).eval()
    state = {k: v for k, v in dense.state_dict().items() if ".ffn." not in k}
    missing, unexpected = moe.load_state_dict(state, strict=False)
    assert all(".ffn." in k for k in missing) and not unexpected
    for moe_block, dense_block in zip(moe.blocks, dense.blocks):
        moe_block.ffn.upcycle_(dense_block.ffn)  # the one expert becomes the dense FFN
    x = torch.randint(2, 32, (2, 10))
    mask = torch.ones_like(x)
    mask[1, 7:] = 0
    real = mask.bool()  # padding is never routed to an expert, so only real positions are comparable
    torch.testing.assert_close(moe(x, mask).logits[real], dense(x, mask).logits[real])
    torch.testing.assert_close(moe(x).logits, dense(x).logits)


def test_moe_bert_returns_aux_loss_stats_and_metrics():
    model = build_model("bert", **BASE, ffn="moe", moe={"n_experts": 4, "top_k": 2})
    out = model(torch.randint(2, 32, (2, 8)))
    assert out.aux_loss > 0 and out.stats["moe_load"].shape == (2, 4)
    out.aux_loss.backward()
    assert all(b.ffn.router.weight.weight.grad is not None for b in model.blocks)
    metrics = get_plugin("bert").metrics(model.config)
    for metric in metrics.values():
        metric.update(out.stats)
    assert set(metrics["bert/moe/load_entropy"].compute()) == {"layer0", "layer1", "mean"}


def test_bert_moe_options_compose_from_the_command_line():
    cfg = compose_train(["model=bert", "model.ffn=moe", "model.moe.n_experts=4", "model.moe.top_k=1"])
    name, values = split_model_config(cfg)
    model = get_plugin(name).build(make_config(name, **values))
    assert len(model.blocks[0].ffn.experts) == 4
