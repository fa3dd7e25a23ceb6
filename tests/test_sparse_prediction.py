"""Masked-LM heads on the scored positions only (``predict_mask`` / ``ModelOutput.scored``): bert computes
the same logits there, and the training loop's loss and accuracy do not change."""
from __future__ import annotations

import torch

from framework import build_model
from framework.lit_module import IGNORE_INDEX, ArchitectureModule, takes_predict_mask, token_loss

CFG = dict(vocab_size=40, d_model=16, n_layers=2, n_heads=2, max_seq_len=16, dropout=0.0)


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 39, (3, 12), generator=g)
    labels = torch.full_like(ids, IGNORE_INDEX)
    chosen = torch.rand(3, 12, generator=g) < 0.3
    chosen[2] = False  # a row with nothing to predict
    labels[chosen] = ids[chosen]
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return {"input_ids": ids.masked_fill(chosen, 39), "attention_mask": mask, "labels": labels}


def test_bert_logits_at_scored_positions_equal_the_full_logits_with_gradients() -> None:
    torch.manual_seed(0)
    model = build_model("bert", **CFG)
    b = batch()
    scored = b["labels"] != IGNORE_INDEX
    full = model(b["input_ids"], b["attention_mask"])
    sparse = model(b["input_ids"], b["attention_mask"], predict_mask=scored)
    assert full.scored is None and sparse.scored is scored
    assert sparse.logits.shape == (int(scored.sum()), CFG["vocab_size"])
    torch.testing.assert_close(sparse.logits, full.logits[scored])
    loss_full = token_loss(full.logits, b["labels"])
    loss_sparse = token_loss(sparse.logits, sparse.aligned_labels(b["labels"]))
    torch.testing.assert_close(loss_sparse, loss_full)
    g_full = torch.autograd.grad(loss_full, list(model.parameters()), allow_unused=True)
    g_sparse = torch.autograd.grad(loss_sparse, list(model.parameters()), allow_unused=True)
    for a, r in zip(g_sparse, g_full):
        assert (a is None) == (r is None)
        if a is not None:
            torch.testing.assert_close(a, r)


def test_training_loop_uses_the_sparse_head_for_masked_lm_only() -> None:
    module = ArchitectureModule("bert", CFG)
    assert module._sparse_prediction and takes_predict_mask(module.model)
    assert not ArchitectureModule("decoder", CFG)._sparse_prediction  # causal LM: every position is scored
    b = batch()
    out, loss = module._step(b)
    assert out.scored is not None
    torch.testing.assert_close(loss, token_loss(module.model(b["input_ids"], b["attention_mask"]).logits, b["labels"]))


def test_validation_accuracy_is_the_same_either_way() -> None:
    torch.manual_seed(0)
    module = ArchitectureModule("bert", CFG)
    b = batch()
    accs = []
    for sparse in (True, False):
        module._sparse_prediction = sparse
        module.val_acc.reset(), module.val_exact.reset()
        module.validation_step(b, 1)
        accs.append((module.val_acc.compute(), module.val_exact.compute()))
    torch.testing.assert_close(accs[0], accs[1])
