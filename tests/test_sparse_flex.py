"""FlexAttention as the sparse kinds' CUDA kernel (framework/nn/sparse/flex.py): the pattern's own rule as the
mask, padding and ALiBi as the score rule. On CPU FlexAttention runs forward only, so these tests hold its output
(eager and compiled) to the masked reference; the fwd+bwd comparison with the blocked kernel needs a GPU."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.testing import assert_close

import framework.nn.sparse.flex as flex
from framework.nn.sparse import SparseAttentionConfig, SparseSelfAttention, block_sparse_attention, masked_attention
from framework.nn.sparse.flex import flex_available, flex_sparse_attention, pattern_block_mask
from test_sparse_patterns import KINDS, make

pytestmark = pytest.mark.filterwarnings("ignore:.*flex_attention.*:UserWarning")


def _inputs(b: int, h: int, t: int, d: int = 16, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g) for _ in range(3)]


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("kind", KINDS)
def test_flex_equals_the_masked_reference(kind: str, causal: bool) -> None:
    """Every pattern family over more than one 128-token tile, with left padding and (second case) ALiBi."""
    for t, with_alibi in ((150, False), (261, True)):
        b, h = 2, 3
        pattern = make(kind, causal, 8, t_max=t)
        q, k, v = _inputs(b, h, t, seed=t)
        keep = torch.ones(b, t, dtype=torch.bool)
        keep[1, : t // 5] = False
        slopes = torch.rand(h) if with_alibi else None
        with torch.no_grad():
            out = flex_sparse_attention(q, k, v, pattern, keep, slopes, compiled=False)
        assert_close(out, masked_attention(q, k, v, pattern.mask(t), keep.float(), slopes), atol=2e-5, rtol=1e-4)


def test_a_window_block_mask_skips_the_tiles_outside_its_reach() -> None:
    """O(t * reach) on the GPU: at 2048 tokens a 64-token causal window touches at most 2 of the 16 key tiles
    of each query tile (its own and the one before), and bidirectional at most 3."""
    from framework.nn.sparse import SlidingWindow

    for causal, most in ((True, 2), (False, 3)):
        mask = pattern_block_mask(SlidingWindow(64, causal, 32), 2048, torch.device("cpu"))
        tiles = mask.kv_num_blocks + (mask.full_kv_num_blocks if mask.full_kv_num_blocks is not None else 0)
        assert tiles.shape[-1] == 2048 // flex.FLEX_BLOCK
        assert int(tiles.max()) == most and int(tiles.min()) >= 1


def test_the_compiled_block_mask_equals_the_eager_one() -> None:
    """What CUDA builds (compiled, no (t, t) tensor) is the mask the CPU tests check (eager)."""
    pattern = make("longformer_dilated", True, 8, t_max=300)
    compiled = pattern_block_mask(pattern, 300, torch.device("cpu"), compile_mask=True)
    eager = pattern_block_mask(make("longformer_dilated", True, 8, t_max=300), 300, torch.device("cpu"))
    assert torch.equal(compiled.to_dense(), eager.to_dense())
    assert torch.equal(compiled.mask_mod(0, 0, torch.tensor(7), torch.tensor(3)), pattern.allowed(torch.tensor(7), torch.tensor(3)))


def test_the_block_mask_is_built_once_per_length_and_device() -> None:
    pattern = make("longformer", True, 8)
    first = pattern_block_mask(pattern, 200, torch.device("cpu"))
    assert pattern_block_mask(pattern, 200, torch.device("cpu")) is first
    assert pattern_block_mask(pattern, 201, torch.device("cpu")) is not first


def test_compiled_flex_through_block_sparse_attention_equals_the_reference() -> None:
    """kernel="flex" runs the compiled kernel (what "auto" picks on CUDA) with padding and ALiBi."""
    t, b, h = 200, 2, 2
    pattern = make("longformer_dilated", True, 8, t_max=t)
    q, k, v = _inputs(b, h, t)
    pad = torch.ones(b, t)
    pad[0, :17] = 0
    slopes = torch.tensor([0.5, 0.125])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = block_sparse_attention(q, k, v, pattern, pad, slopes, kernel="flex")
    assert_close(out, masked_attention(q, k, v, pattern.mask(t), pad, slopes), atol=2e-5, rtol=1e-4)


def test_flex_refuses_to_train_on_cpu_and_names_the_option() -> None:
    q, k, v = (x.requires_grad_() for x in _inputs(1, 2, 64))
    with pytest.raises(ValueError, match="sparse.kernel=flex.*no backward on CPU"):
        block_sparse_attention(q, k, v, make("sliding_window", True, 8), kernel="flex")


def test_auto_picks_flex_only_on_cuda(monkeypatch) -> None:
    q = torch.zeros(1, 1, 4, 8)
    assert not flex_available(q)  # CPU: the blocked kernels
    calls = []
    monkeypatch.setattr(flex, "flex_available", lambda q: True)  # as on a CUDA tensor
    monkeypatch.setattr(flex, "flex_sparse_attention", lambda *a, **kw: calls.append(a) or a[0])
    pattern = make("sliding_window", True, 8)
    block_sparse_attention(q, q, q, pattern)
    block_sparse_attention(q, q, q, pattern, kernel="math")
    assert len(calls) == 1


@pytest.mark.parametrize(("kind", "groups"), [("bigbird", 1), ("strided", 2)])
def test_the_layer_passes_its_configured_kernel(kind: str, groups: int) -> None:
    """model.sparse.kernel reaches the kernel: flex and the default agree at inference, both through the layer
    (strided: one call per head group, on split views of q, k, v)."""
    torch.manual_seed(0)
    layers = {kernel: SparseSelfAttention(32, 4, kind=kind, position="rope", max_seq_len=160,
                                          sparse=SparseAttentionConfig(window=16, block_size=8, n_global=2,
                                                                       n_random=1, stride=16,
                                                                       kernel=kernel)).eval()
              for kernel in ("auto", "flex")}
    layers["flex"].load_state_dict(layers["auto"].state_dict())
    x = torch.randn(2, 160, 32)
    mask = torch.ones(2, 160)
    mask[1, :30] = 0
    calls = []
    real = flex.flex_sparse_attention
    with torch.no_grad():
        ref = layers["auto"](x, mask)
        flex.flex_sparse_attention = lambda *a, **kw: calls.append(1) or real(*a, **{**kw, "compiled": False})
        try:
            out = layers["flex"](x, mask)
        finally:
            flex.flex_sparse_attention = real
    assert calls == [1] * groups
    assert_close(out, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention's backward needs CUDA")
@pytest.mark.parametrize("kind", KINDS)
def test_flex_on_cuda_equals_the_blocked_kernel_values_and_gradients(kind: str) -> None:
    t, b, h = 300, 2, 4
    pattern = make(kind, True, 32, t_max=t)
    q, k, v = (x.cuda().requires_grad_() for x in _inputs(b, h, t, d=64))
    pad = torch.ones(b, t, device="cuda")
    pad[1, :40] = 0
    outs = [block_sparse_attention(q, k, v, pattern, pad, kernel=kernel) for kernel in ("flex", "math")]
    assert_close(outs[0], outs[1], atol=1e-4, rtol=1e-3)
    grad = torch.randn_like(outs[0])
    for a, r in zip(torch.autograd.grad(outs[0], (q, k, v), grad), torch.autograd.grad(outs[1], (q, k, v), grad)):
        assert_close(a, r, atol=1e-4, rtol=1e-3)
