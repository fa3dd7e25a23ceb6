"""Reformer LSH attention: equals dense attention over the union of the chunks it visits (with the
per-round duplicate correction), identical vectors share a bucket, more rounds never lower recall,
one bucket and one chunk is dense attention without self, causality, statistics."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torch.testing import assert_close

from framework.nn.sparse import hash_vectors, lsh_attention, lsh_recall, make_rotations, masked_attention, union_mask
from framework.nn.sparse.lsh import plan
from framework.nn.sparse.stats import lsh_bucket_balance


def reference(qk: torch.Tensor, v: torch.Tensor, p, causal: bool, pad: torch.Tensor | None) -> torch.Tensor:
    """Dense softmax over the union mask; a query with no visible key attends to itself."""
    t = qk.shape[-2]
    m = union_mask(p, causal)
    if pad is not None:
        m = m & pad.bool()[:, None, None, :]
    alone = ~m.any(-1, keepdim=True)
    m = m | (alone & torch.eye(t, dtype=torch.bool))
    return masked_attention(qk, F.normalize(qk, dim=-1), v, m)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("n_hashes", [1, 3])
def test_lsh_equals_dense_attention_under_its_union_mask(causal: bool, n_hashes: int) -> None:
    for t, chunk in [(37, 4), (32, 8)]:
        qk = torch.randn(2, 2, t, 8, dtype=torch.float64, requires_grad=True)
        v = torch.randn(2, 2, t, 8, dtype=torch.float64, requires_grad=True)
        pad = torch.ones(2, t)
        pad[1, :5] = 0
        out, p, pairs = lsh_attention(qk, v, make_rotations(8, 4, n_hashes, 0), chunk, causal, pad)
        ref = reference(qk, v, p, causal, pad)
        assert_close(out, ref)
        grad = torch.randn_like(out)
        for a, r in zip(torch.autograd.grad(out, (qk, v), grad), torch.autograd.grad(ref, (qk, v), grad)):
            assert_close(a, r)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_one_bucket_one_chunk_is_dense_attention_without_self(causal: bool) -> None:
    """n_buckets=2 with all vectors on one side: a single bucket; chunk >= t: a single chunk."""
    t = 20
    qk = torch.randn(1, 2, t, 8, dtype=torch.float64).abs()  # all in the positive orthant
    rot = torch.ones(1, 8, 1)  # x . 1 > 0 for every x: bucket 0
    v = torch.randn(1, 2, t, 8, dtype=torch.float64)
    out, _, _ = lsh_attention(qk, v, rot, t, causal)
    allowed = ~torch.eye(t, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(t, t, dtype=torch.bool).tril()
        allowed[0, 0] = True  # the first position is alone: it attends to itself
    assert_close(out, masked_attention(qk, F.normalize(qk, dim=-1), v, allowed))


def test_identical_vectors_hash_to_the_same_bucket() -> None:
    x = torch.randn(1, 1, 5, 16)
    x = torch.cat([x, x, 3.0 * x], dim=2)  # copies, and scaled copies (angular hashing)
    buckets = hash_vectors(x, make_rotations(16, 8, 4, 1))  # (1, 1, R, 15)
    assert (buckets[..., :5] == buckets[..., 5:10]).all()
    assert (buckets[..., :5] == buckets[..., 10:]).all()


def test_more_hash_rounds_never_lower_recall() -> None:
    t, d = 128, 16
    q = torch.randn(1, 2, t, d)
    keys = F.normalize(q, dim=-1)
    rows = torch.arange(8, t, 7)
    recalls = []
    for n_hashes in (1, 2, 4, 8):
        p = plan(q, make_rotations(d, 16, n_hashes, 0), 8)
        recalls.append(float(lsh_recall(q, keys, p, rows, True, 8)))
    assert all(a <= b + 1e-9 for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[-1] > recalls[0]


def test_lsh_is_causal() -> None:
    t, p_cut = 40, 25
    qk = torch.randn(1, 2, t, 8)
    v = torch.randn(1, 2, t, 8)
    rot = make_rotations(8, 4, 2, 0)
    out, plan_a, _ = lsh_attention(qk, v, rot, 4, True)
    v2 = v.clone()
    v2[:, :, p_cut:] += 10.0
    out2, _, _ = lsh_attention(qk, v2, rot, 4, True)  # same hashes (qk unchanged), only future values moved
    assert_close(out2[:, :, :p_cut], out[:, :, :p_cut])
    assert not union_mask(plan_a, True).triu(1).any()


def test_bucket_balance_is_one_when_even_and_low_when_collapsed() -> None:
    q = torch.randn(1, 1, 512, 16)
    balanced = lsh_bucket_balance(plan(q, make_rotations(16, 4, 1, 0), 8), 4)
    collapsed = lsh_bucket_balance(plan(q.abs(), torch.ones(1, 16, 2), 8), 4)
    assert balanced > 0.9
    assert collapsed < 0.1
