"""bert composes with the sparse attention kinds by config: bidirectional windows, same weights."""
from __future__ import annotations

import pytest
import torch

from framework import build_model

SMALL = dict(vocab_size=32, d_model=32, n_layers=1, n_heads=4, max_seq_len=40, dropout=0.0)


@pytest.mark.parametrize("kind", ["sliding_window", "longformer", "bigbird"])
def test_covering_window_equals_dense_bert(kind):
    torch.manual_seed(0)
    dense = build_model("bert", **SMALL).eval()
    sparse = build_model("bert", **SMALL, attention=kind, sparse={"window": 64, "block_size": 16}).eval()
    sparse.load_state_dict(dense.state_dict())
    x = torch.randint(3, 32, (2, 37))
    mask = torch.ones_like(x)
    mask[1, 30:] = 0
    torch.testing.assert_close(sparse(x, attention_mask=mask).logits[mask.bool()],
                               dense(x, attention_mask=mask).logits[mask.bool()], rtol=1e-4, atol=1e-5)


def test_sliding_window_is_bidirectional_and_local():
    model = build_model("bert", **SMALL, attention="sliding_window", sparse={"window": 4, "block_size": 4}).eval()
    x = torch.randint(3, 32, (1, 24))
    base = model(x).logits
    near, far = x.clone(), x.clone()
    near[0, 12] = (x[0, 12] + 1) % 29 + 3  # a later token inside position 10's window
    far[0, 23] = (x[0, 23] + 1) % 29 + 3   # a token far outside it (one layer: no path)
    assert not torch.allclose(model(near).logits[0, 10], base[0, 10])
    torch.testing.assert_close(model(far).logits[0, 10], base[0, 10])
