"""The decode path every causal model shares (framework/generation/causal.py, framework/nn/kv_cache.py):
preallocated KV caches written in place, the prompt as one forward, batches of left-padded prompts.

Properties: cached greedy decoding == recomputing the whole context at every step, for every causal preset, at
batch 2 and with left padding; a left-padded row decodes the tokens it decodes alone; the cache is written into
one buffer (no copy per token) and earlier views stay valid; with gradients the cache never writes in place.
"""
from __future__ import annotations

import copy
import functools

import pytest
import torch

from framework.hydra_search_path import model_options
from framework.nn.kv_cache import MIN_CAPACITY, KVCache
from framework.registry import get_plugin, make_config
from framework.train import split_model_config
from hydra_compose import compose_train

VOCAB = 48
CAUSAL = sorted(name for name, plugin in model_options().items() if get_plugin(plugin).objective == "causal_lm")


def preset(name: str):  # noqa: ANN201
    """A fresh copy of the tiny ``name`` model in float64 (composed once per preset)."""
    return copy.deepcopy(_preset(name))


@functools.cache
def _preset(name: str):  # noqa: ANN202
    overrides = [f"model={name}", f"model.vocab_size={VOCAB}", "model.max_seq_len=64", "model.d_model=64"]
    if name not in ("lstm", "gru", "elman", "rnn"):
        overrides.append("model.n_heads=4")
    plugin, values = split_model_config(compose_train(overrides))
    for section, small in (("sparse", {"window": 4, "block_size": 4}), ("ssm", {"chunk_size": 4}),
                           ("rglru", {"chunk_size": 4})):
        if any(s.options == section for s in make_config(plugin, **values).token_mixers):
            values[section] = {**values.get(section, {}), **small}
    torch.manual_seed(0)
    return get_plugin(plugin).build(make_config(plugin, **values)).to(torch.float64).eval()


def pads_left(model) -> bool:  # noqa: ANN001
    """Stacks of attention layers only (recurrent layers refuse left padding, by design)."""
    return all(spec.family == "attn" for spec in model.token_specs)


def test_every_causal_preset_is_covered() -> None:
    assert {"gpt", "llama", "mixtral", "mamba", "lstm", "jamba", "deepseek", "qwen3_next"} <= set(CAUSAL)


@pytest.mark.parametrize("name", CAUSAL)
def test_cached_greedy_decoding_equals_recomputation_at_batch_2(name: str) -> None:
    model = preset(name)
    prompt = torch.randint(0, VOCAB, (2, 7))
    cached = model.generate(prompt, 12, temperature=0)
    recomputed = model.generate(prompt, 12, temperature=0, use_cache=False)
    assert cached.shape == (2, 19)
    assert torch.equal(cached, recomputed)
    assert torch.equal(cached[:, :7], prompt)


@pytest.mark.parametrize("name", CAUSAL)
def test_left_padded_prompts_decode_as_they_would_alone(name: str) -> None:
    model = preset(name)
    short, long = torch.randint(0, VOCAB, (1, 4)), torch.randint(0, VOCAB, (1, 7))
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])
    mask = torch.ones_like(batch)
    mask[0, :3] = 0
    if not pads_left(model):
        with pytest.raises(ValueError, match="right padding only"):
            model.generate(batch, 4, temperature=0, attention_mask=mask)
        return
    cached = model.generate(batch, 10, temperature=0, attention_mask=mask)
    assert torch.equal(cached, model.generate(batch, 10, temperature=0, attention_mask=mask, use_cache=False))
    alone_short = model.generate(short, 10, temperature=0)
    alone_long = model.generate(long, 10, temperature=0)
    if name in ("switch", "moe", "longformer_moe"):  # capacity-limited routing: padding tokens take expert slots
        return
    assert torch.equal(cached[0, 3:], alone_short[0])
    assert torch.equal(cached[1], alone_long[0])


def test_the_cache_is_one_buffer_written_in_place() -> None:
    cache = KVCache()
    cache.reserve(20)
    k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    with torch.inference_mode():
        first_k, _ = cache.update(k, v)
        buffer = cache._k.data_ptr()
        steps = [torch.randn(2, 3, 1, 4) for _ in range(15)]
        for step in steps:
            out_k, out_v = cache.update(step, step)
        assert cache._k.data_ptr() == buffer and cache.capacity == 20  # reserved once, no reallocation
        assert out_k.shape == (2, 3, 20, 4) and cache.length == 20
        torch.testing.assert_close(out_k, torch.cat([k, *steps], dim=-2), rtol=0, atol=0)
        torch.testing.assert_close(first_k, k, rtol=0, atol=0)  # an earlier view still holds its positions
        cache.update(torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4))  # past the reservation: doubles
        assert cache.capacity == max(40, MIN_CAPACITY) and cache.length == 21
        torch.testing.assert_close(cache.k[..., :20, :], out_k, rtol=0, atol=0)


def test_with_gradients_the_cache_concatenates_and_gradients_flow() -> None:
    cache = KVCache()
    k = torch.randn(1, 2, 3, 4, requires_grad=True)
    a, _ = cache.update(k, k)
    b, _ = cache.update(k[..., :1, :] * 2, k[..., :1, :])
    assert b.shape[-2] == 4 and a.shape[-2] == 3
    b.sum().backward()
    assert torch.equal(k.grad[..., 0, :], torch.full_like(k.grad[..., 0, :], 3.0))


def test_learned_positions_of_a_left_padded_row_are_its_own() -> None:
    model = preset("gpt")
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    positions = model._positions(mask, 0, 5, torch.device("cpu"))
    assert positions.tolist() == [[0, 0, 0, 1, 2]]
    assert model._positions(torch.ones(1, 6, dtype=torch.long), 4, 2, torch.device("cpu")).tolist() == [4, 5]


def test_the_compiled_decode_step_gives_the_eager_tokens() -> None:
    """generate(compile=True): the one-token step through torch.compile (dynamic cache length, one graph)."""
    import framework

    torch.manual_seed(0)
    model = framework.build_model("decoder", vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=1, max_seq_len=64,
                                  position="rope", norm="rmsnorm", ffn="swiglu").eval()
    prompt = torch.randint(0, VOCAB, (2, 5))
    eager = model.generate(prompt, 8, temperature=0)
    compiled = model.generate(prompt, 8, temperature=0, compile=True)
    assert model._compiled_decode is not None
    assert torch.equal(compiled, eager)
