"""framework.nn.sdpa.attention: SDPA, with half-precision CPU attention in fp32 where that kernel is faster."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from framework.nn import SelfAttention
from framework.nn.sdpa import attention, fp32_is_faster


def qkv(t: int, d: int, dtype: torch.dtype = torch.bfloat16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 2, t, d, generator=g).to(dtype).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize("t, d, fp32", [(64, 16, True), (512, 32, True), (513, 32, False), (64, 64, False)])
def test_the_rule_picks_fp32_for_small_heads_and_short_contexts(t: int, d: int, fp32: bool) -> None:
    q, k, _ = qkv(t, d)
    assert fp32_is_faster(q, k) is fp32
    assert not fp32_is_faster(q.float(), k.float())  # fp32 inputs: nothing to change


@pytest.mark.parametrize("t, d", [(64, 16), (600, 16)])
@pytest.mark.parametrize("causal", [True, False])
def test_matches_sdpa_in_the_kernel_it_picks(t: int, d: int, causal: bool) -> None:
    q, k, v = qkv(t, d)
    out = attention(q, k, v, is_causal=causal)
    assert out.dtype == torch.bfloat16
    if fp32_is_faster(q, k):  # exactly the fp32 kernel's result, rounded once
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal).to(torch.bfloat16)
    else:
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    out.float().sum().backward()
    assert all(x.grad is not None and x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all() for x in (q, k, v))


def test_float_mask_and_gqa_under_autocast() -> None:
    torch.manual_seed(0)
    attn = SelfAttention(32, 4, n_kv_heads=2, causal=True)
    x = torch.randn(2, 9, 32)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), attn(x, mask), atol=3e-2, rtol=3e-2)
