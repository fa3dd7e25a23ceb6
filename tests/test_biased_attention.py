"""Attention with a learned additive bias (T5's relative positions) and the masks built for it."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from framework.nn.cross_attention import MultiHeadAttention, biased_attention, build_mask


@pytest.mark.parametrize("scale", [None, 1.0])
def test_biased_attention_equals_sdpa_with_gradients(scale: float | None) -> None:
    torch.manual_seed(0)
    q, k, v = [torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    bias = torch.randn(1, 3, 7, 7, dtype=torch.float64, requires_grad=True)
    key_mask = torch.ones(2, 7)
    key_mask[1, 5:] = 0
    mask = build_mask(7, 7, causal=True, key_mask=key_mask, position_bias=bias, dtype=torch.float64)
    ours = biased_attention(q, k, v, mask.additive, scale=scale)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.additive, scale=scale)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ours)
    got = torch.autograd.grad(ours, (q, k, v, bias), g, retain_graph=True)  # the mask graph is shared
    for a, r in zip(got, torch.autograd.grad(ref, (q, k, v, bias), g)):
        torch.testing.assert_close(a, r)


def test_module_takes_the_biased_path_only_for_a_learned_bias_and_agrees_with_sdpa() -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 2, bias=False, scale=1.0)
    x = torch.randn(2, 5, 16)
    bias = torch.randn(1, 2, 5, 5, requires_grad=True)
    learned = attn(x, position_bias=bias)  # bias requires grad: biased_attention
    fixed = attn(x, position_bias=bias.detach())  # no grad: SDPA
    torch.testing.assert_close(learned, fixed)
    learned.sum().backward()
    assert bias.grad is not None and bias.grad.abs().sum() > 0


def test_a_key_mask_without_padding_is_dropped() -> None:
    bias = torch.randn(1, 2, 4, 4).permute(0, 1, 3, 2)  # a strided view, as the relative bias arrives
    mask = build_mask(4, 4, key_mask=torch.ones(3, 4), position_bias=bias)
    assert mask.allowed is None and mask.additive.shape == (1, 2, 4, 4) and mask.additive.is_contiguous()
    assert build_mask(4, 4, key_mask=torch.ones(3, 4)).additive is None  # nothing left: SDPA's fused kernel
    padded = build_mask(4, 4, key_mask=torch.tensor([[1, 1, 1, 0]] * 3), position_bias=bias)
    assert padded.additive.shape == (3, 2, 4, 4) and bool((padded.additive[..., 3] < -1e30).all())
