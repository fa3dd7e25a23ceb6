"""The blocked sparse kernel against dense references: equivalence to dense attention when the pattern
covers everything, equivalence to its own explicit mask (values and gradients) over random shapes,
padding and causal/bidirectional, causality, global tokens, density = mask count, receptive field."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F
from torch.testing import assert_close

from framework.nn.sparse import (
    BigBird, Fixed, Longformer, SlidingWindow, Strided, block_sparse_attention, density, full_pairs,
    masked_attention, receptive_field,
)


def qkv(b: int, h: int, t: int, d: int = 8) -> list[torch.Tensor]:
    return [torch.randn(b, h, t, d, dtype=torch.float64, requires_grad=True) for _ in range(3)]


def make(kind: str, causal: bool, bs: int, t_max: int = 64):
    """One pattern of each family, small enough that a 30-60 token sequence is really sparse."""
    return {
        "sliding_window": lambda: SlidingWindow(5, causal, bs),
        "dilated": lambda: SlidingWindow(3, causal, bs, dilation=3),
        "strided_local": lambda: Strided(6, "local", causal, bs),
        "strided_strided": lambda: Strided(6, "strided", causal, bs),
        "fixed_block": lambda: Fixed(8, 2, "block", causal, bs),
        "fixed_summary": lambda: Fixed(8, 2, "summary", causal, bs),
        "longformer": lambda: Longformer(4, 3, causal, bs),
        "longformer_dilated": lambda: Longformer(3, 2, causal, bs, dilation=2),
        "bigbird": lambda: BigBird(2 * bs, 2, 2, t_max, causal, bs, seed=3),
    }[kind]()


KINDS = ["sliding_window", "dilated", "strided_local", "strided_strided", "fixed_block", "fixed_summary",
         "longformer", "longformer_dilated", "bigbird"]


@pytest.mark.parametrize("kernel", ["flash_cpu", "math"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("kind", KINDS)
def test_blocked_kernel_equals_its_masked_reference(kind: str, causal: bool, kernel: str) -> None:
    """Random shapes (lengths not divisible by the block), padding, ALiBi, values and gradients; both kernels."""
    g = torch.Generator().manual_seed(hash(kind) % 1000)
    for trial in range(3):
        bs = [4, 8, 5][trial]
        t = int(torch.randint(bs + 1, 50, (1,), generator=g))
        b, h = 2, 3
        pattern = make(kind, causal, bs)
        q, k, v = qkv(b, h, t)
        pad = torch.ones(b, t)
        pad[1, : t // 4] = 0  # left padding in the second sequence
        slopes = torch.rand(h, dtype=torch.float64) if trial == 2 else None
        out = block_sparse_attention(q, k, v, pattern, pad, slopes, kernel=kernel)
        ref = masked_attention(q, k, v, pattern.mask(t), pad, slopes)
        assert_close(out, ref)
        grad = torch.randn_like(out)
        for a, r in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
            assert_close(a, r)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_covering_patterns_equal_dense_attention(causal: bool) -> None:
    """window >= t, or every token global, is plain dense attention (SDPA)."""
    t = 23
    q, k, v = qkv(2, 2, t)
    dense = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    for pattern in [SlidingWindow(t, causal, 4), SlidingWindow(t + 5, causal, 8), Longformer(1, t, causal, 4),
                    BigBird(24, 0, 0, 24, causal, 4), Strided(t, "local", causal, 4), Fixed(t, 1, "block", causal, 4)]:
        assert_close(block_sparse_attention(q, k, v, pattern), dense)


@pytest.mark.parametrize("kind", KINDS)
def test_causal_patterns_never_see_the_future(kind: str) -> None:
    """Changing tokens after position p leaves outputs up to p untouched (values and mask)."""
    t, p = 37, 20
    pattern = make(kind, True, 4)
    assert not pattern.mask(t).triu(1).any()
    q, k, v = (x.detach() for x in qkv(1, 2, t))
    out = block_sparse_attention(q, k, v, pattern)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, p + 1 :] += 5.0
    v2[:, :, p + 1 :] -= 3.0
    assert_close(block_sparse_attention(q, k2, v2, pattern)[:, :, : p + 1], out[:, :, : p + 1])


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_global_tokens_see_and_are_seen_by_every_position(causal: bool) -> None:
    t, n_global = 40, 3
    for pattern in [Longformer(2, n_global, causal, 4), BigBird(4, n_global, 1, 40, causal, 4)]:
        mask = pattern.mask(t)
        visible = torch.ones(t, t, dtype=torch.bool).tril() if causal else torch.ones(t, t, dtype=torch.bool)
        assert (mask[:n_global] == visible[:n_global]).all()  # global rows see every (earlier) key
        assert (mask[:, :n_global] == visible[:, :n_global]).all()  # every query sees the global keys
        if isinstance(pattern, Longformer):  # others keep their window (bigbird adds random blocks)
            assert not mask[n_global + 10, n_global + 1]
        # And the kernel agrees: a change at a global key moves every later output.
        q, k, v = (x.detach() for x in qkv(1, 1, t))
        out = block_sparse_attention(q, k, v, pattern)
        v2 = v.clone()
        v2[:, :, 1] += 1.0
        moved = (block_sparse_attention(q, k, v2, pattern) - out).abs().amax(-1)[0, 0]
        assert (moved[1:] > 0).all() if causal else (moved > 0).all()


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("kind", KINDS)
def test_density_equals_the_count_of_mask_entries(kind: str, causal: bool) -> None:
    t = 45
    pattern = make(kind, causal, 4)
    mask = pattern.mask(t)
    expected = int(mask.sum()) / (t * (t + 1) // 2 if causal else t * t)
    assert density(pattern, t) == pytest.approx(expected)
    assert full_pairs(t, causal) == (t * (t + 1) // 2 if causal else t * t)


def test_sliding_window_density_and_memory_are_linear() -> None:
    """The kernel's gather plan is O(t * (window + block)), not O(t^2)."""
    window, bs = 16, 8
    for t in (256, 1024):
        layout = SlidingWindow(window, True, bs).layout(t)
        assert layout.index.shape[1] <= math.ceil((window + bs) / 32) * 32
    assert density(SlidingWindow(window, True, bs), 1024) < 0.04


def test_receptive_field_grows_by_a_window_per_layer() -> None:
    t, w = 100, 5
    pattern = SlidingWindow(w, True, 4)
    for n_layers in (1, 2, 3):
        assert receptive_field([[(0, 1, pattern)]] * n_layers, t) == n_layers * (w - 1) + 1
    # Strided local + strided halves reach everything in two layers when stride^2 >= t.
    halves = [(0, 1, Strided(10, "local", True, 4)), (1, 2, Strided(10, "strided", True, 4))]
    assert receptive_field([halves, halves], t) == t
    # A causal global prefix token adds itself; a bidirectional one relays every position in two layers.
    assert receptive_field([[(0, 1, Longformer(w, 1, True, 4))]] * 2, t) == 2 * (w - 1) + 2
    assert receptive_field([[(0, 1, Longformer(w, 1, False, 4))]] * 2, t) == t


def test_block_size_dividing_the_window_is_not_needed_for_window_patterns() -> None:
    """Odd block sizes and lengths just pad; bigbird rejects a block size that does not divide the window
    (tested in test_sparse_plugin.py)."""
    q, k, v = (x.detach() for x in qkv(1, 1, 13))
    pattern = SlidingWindow(4, True, 7)
    assert_close(block_sparse_attention(q, k, v, pattern), masked_attention(q, k, v, pattern.mask(13)))


@pytest.mark.parametrize("kind", ["sliding_window", "longformer", "strided_strided"])
def test_flash_kernel_in_bf16_matches_the_math_kernel(kind: str) -> None:
    """The fused CPU path takes bf16 (autocast training) and agrees with the unfused kernel."""
    torch.manual_seed(0)
    t = 45
    pattern = make(kind, True, 8)
    q, k, v = [x.detach().to(torch.bfloat16).requires_grad_() for x in qkv(1, 2, t, 16)]
    outs, grads = [], []
    for kernel in ("flash_cpu", "math"):
        out = block_sparse_attention(q, k, v, pattern, kernel=kernel)
        assert out.dtype == torch.bfloat16, kernel
        outs.append(out.float())
        grads.append([g.float() for g in torch.autograd.grad(out.float().square().sum(), (q, k, v))])
    assert torch.isfinite(outs[0]).all()
    assert_close(outs[0], outs[1], atol=3e-2, rtol=3e-2)
    for a, r in zip(*grads):
        assert_close(a, r, atol=6e-2, rtol=6e-2)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("with_padding", [False, True])
def test_flash_kernel_block_by_block_with_the_shared_window_mask(causal: bool, with_padding: bool, monkeypatch) -> None:
    """One query block per chunk: interior chunks take the broadcast window template (Layout.shared_mask),
    edge chunks their own rows; values and gradients still equal the masked reference."""
    import framework.nn.sparse.blocked_flash as flash

    monkeypatch.setattr(flash, "FLASH_CHUNK_ELEMS", 1)
    t, bs = 45, 4
    pattern = SlidingWindow(6, causal, bs)
    template, interior = pattern.layout(t).shared_mask()
    assert template is not None and 3 <= int(interior.sum()) < len(interior)  # both kinds of chunk occur
    q, k, v = qkv(2, 2, t)
    pad = None
    if with_padding:
        pad = torch.ones(2, t)
        pad[1, :7] = 0
    out = block_sparse_attention(q, k, v, pattern, pad, kernel="flash_cpu")
    ref = masked_attention(q, k, v, pattern.mask(t), pad)
    assert_close(out, ref)
    grad = torch.randn_like(out)
    for a, r in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        assert_close(a, r)
