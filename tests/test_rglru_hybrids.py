"""Griffin's ``rglru`` token mixer (framework/mixers/rglru.py) and the hybrid presets griffin, jamba, samba.

1. forms agree: the chunked scan == step-by-step recurrence == a naive loop written here (values and gradients,
   fp64, lengths not divisible by the chunk), the whole block == a naive line-by-line Griffin block written here,
   and the mixer's full forward == token-by-token decode == pieces;
2. causality, cached generation == recomputation for rglru and for each hybrid preset (mixed caches), a decode
   state whose size does not grow with the generated length;
3. parity with Hugging Face's RecurrentGemmaForCausalLM (griffin) and JambaForCausalLM (jamba): logits and greedy
   generation, weights copied by plugins/decoder/hf_recurrent_gemma.py and hf_jamba.py; differences pinned;
4. statistics, stability (fp32 and bf16 autocast), bad input.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F
from torch.testing import assert_close

import framework
from framework.config_schema import ConfigError
from framework.mixers.rglru import GriffinRecurrentBlock, RGLRUState, linear_scan, linear_step
from framework.mixers.ssm import SSMState
from framework.nn.kv_cache import KVCache
from framework.registry import get_plugin, make_config
from framework.stack import StackLM, stack_metrics
from framework.train import split_model_config
from hydra_compose import compose_train

VOCAB = 48
PRESETS = ("griffin", "jamba", "samba")


def build(dtype: torch.dtype = torch.float64, **overrides) -> StackLM:
    values = dict(vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=2, mixer="rglru", ffn="none", position="none",
                  norm="rmsnorm", rglru={"chunk_size": 4})
    values.update(overrides)
    return framework.build_model("decoder", **values).to(dtype).eval()


def preset(name: str, dtype: torch.dtype = torch.float32, **overrides) -> StackLM:
    """A hybrid preset as `archlab train model=<name>` composes it, shrunk (width 32, vocab 48, windows of 4)."""
    cfg = compose_train([f"model={name}", "model.vocab_size=48", "model.max_seq_len=64", "model.d_model=32",
                         "model.n_heads=4"])
    plugin, values = split_model_config(cfg)
    values = {**values, **overrides}
    for section, small in (("sparse", {"window": 4, "block_size": 4}), ("ssm", {"chunk_size": 4}),
                           ("rglru", {"chunk_size": 4})):
        if any(s.options == section for s in make_config(plugin, **values).token_mixers):
            values[section] = {**values.get(section, {}), **small}
    torch.manual_seed(0)
    return get_plugin(plugin).build(make_config(plugin, **values)).to(dtype).eval()


def tokens(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


# ---- 1. forms agree ------------------------------------------------------------------------------


def naive_recurrence(a, b, h0):  # noqa: ANN001, ANN201
    h, hs = h0, []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        hs.append(h)
    return torch.stack(hs, 1), h


def stepwise(a, b, h0):  # noqa: ANN001, ANN201
    h, hs = h0, []
    for t in range(a.shape[1]):
        h = linear_step(h, a[:, t], b[:, t])
        hs.append(h)
    return torch.stack(hs, 1), h


def values_and_grads(fn, inputs: list[torch.Tensor]) -> list[torch.Tensor]:  # noqa: ANN001
    leaves = [v.clone().requires_grad_() for v in inputs]
    hs, h = fn(*leaves)
    gen = torch.Generator().manual_seed(7)
    weigh = lambda v: (v * torch.randn(v.shape, generator=gen, dtype=v.dtype)).sum()  # noqa: E731
    return [hs.detach(), h.detach(), *torch.autograd.grad(weigh(hs) + weigh(h), leaves)]


@pytest.mark.parametrize("b, t, w, chunk", [(2, 13, 5, 4), (1, 30, 3, 7), (3, 9, 4, 16), (2, 8, 2, 1), (1, 1, 3, 4)])
def test_chunked_scan_equals_the_recurrence_and_the_naive_loop(b, t, w, chunk) -> None:
    gen = torch.Generator().manual_seed(t)
    r = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    inputs = [r(b, t, w), r(b, t, w) - 0.5, r(b, w)]  # decays in [0, 1), inputs, h0
    naive = values_and_grads(naive_recurrence, inputs)
    chunked = values_and_grads(lambda a, x, h0: linear_scan(a, x, chunk, h0), inputs)
    steps = values_and_grads(stepwise, inputs)
    for ref, c, s in zip(naive, chunked, steps):  # every h, the last h, then d/da, db, dh0
        assert_close(c, ref)
        assert_close(s, ref)
    zeros = torch.zeros_like(inputs[2])
    assert_close(linear_scan(*inputs[:2], chunk), naive_recurrence(*inputs[:2], zeros))  # no h0: zeros


def test_the_scan_is_finite_for_decays_near_zero_and_one_over_long_chunks() -> None:
    """fp32, one 100-step chunk, decays from 1e-30 to 1 - 1e-7: products in [0, 1] neither overflow nor NaN."""
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2, 100, 6, generator=gen)
    a[..., :2] = 1e-30
    a[..., 2:4] = 1 - 1e-7
    b = torch.randn(2, 100, 6, generator=gen)
    hs, h = linear_scan(a, b, 100)
    ref, ref_h = naive_recurrence(a, b, torch.zeros(2, 6))
    assert torch.isfinite(hs).all()
    assert_close(hs, ref, rtol=1e-5, atol=1e-4)
    assert_close(h, ref_h, rtol=1e-5, atol=1e-4)


def naive_griffin_block(block: GriffinRecurrentBlock, x: torch.Tensor) -> torch.Tensor:
    """Griffin's recurrent block straight from the paper (and HF's RecurrentGemmaRecurrentBlock), one position at a
    time, from a sequence start: no chunks, no fused gates."""
    lru = block.rg_lru
    y = F.gelu(block.linear_y(x), approximate="tanh")
    v = block.linear_x(x)  # (b, T, W)
    k = block.conv_1d.weight.shape[-1]
    u = torch.stack([sum(block.conv_1d.weight[:, 0, k - 1 - j] * v[:, t - j] for j in range(min(k, t + 1)))
                     + block.conv_1d.bias for t in range(x.shape[1])], 1)
    heads = u.unflatten(-1, (lru.n_heads, -1))
    gate_x = torch.sigmoid(torch.einsum("bthi,hij->bthj", heads, lru.input_gate_weight) + lru.input_gate_bias)
    gate_a = torch.sigmoid(torch.einsum("bthi,hij->bthj", heads, lru.recurrent_gate_weight) + lru.recurrent_gate_bias)
    log_a = -8.0 * gate_a.flatten(-2) * F.softplus(lru.recurrent_param)
    a = torch.exp(log_a)
    h, hs = torch.zeros_like(u[:, 0]), []
    for t in range(x.shape[1]):
        multiplier = 1.0 if t == 0 else torch.sqrt(1 - a[:, t] ** 2)  # reset at the sequence start
        h = a[:, t] * h + multiplier * (gate_x.flatten(-2)[:, t] * u[:, t])
        hs.append(h)
    return block.linear_out(torch.stack(hs, 1) * y)


def test_the_block_equals_a_naive_griffin_block_in_values_and_gradients() -> None:
    model = build(d_model=16, n_heads=4, bias=True, rglru={"chunk_size": 4, "lru_width": 24, "conv1d_width": 3})
    block = model.blocks[0].mixer
    with torch.no_grad():  # away from the init: gates and biases all matter
        for p in block.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    x = torch.randn(2, 13, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    params = [x, *block.parameters()]
    ours = block(x).output
    ref = naive_griffin_block(block, x)
    assert_close(ours, ref)
    weights = torch.randn(ours.shape, dtype=ours.dtype, generator=torch.Generator().manual_seed(2))
    for g_ours, g_ref in zip(torch.autograd.grad((ours * weights).sum(), params),
                             torch.autograd.grad((ref * weights).sum(), params)):
        assert_close(g_ours, g_ref)


def test_the_mixer_gives_the_same_outputs_in_one_pass_token_by_token_and_in_pieces() -> None:
    """The conv window and h carry exactly what the full pass sees (chunk 4, 19 tokens, fp64)."""
    model = build()
    x = tokens(2, 19)
    full = model(x).logits
    state = model.new_state()
    assert_close(torch.cat([model(x[:, i : i + 1], state=state).logits for i in range(19)], 1), full)
    state = model.new_state()
    pieces = [model(x[:, :7], state=state).logits, model(x[:, 7:15], state=state).logits,
              model(x[:, 15:], state=state).logits]
    assert_close(torch.cat(pieces, 1), full)
    assert all(isinstance(s, RGLRUState) for s in state.layers) and state.length == 19


def test_the_sqrt_normalisation_has_a_bounded_gradient_as_decays_reach_one() -> None:
    """Griffin's safeguard: d sqrt(1 - a^2) is clipped at 1000, so r -> 0 (a -> 1) keeps gradients finite."""
    model = build(torch.float32)
    lru = model.blocks[0].mixer.rg_lru
    with torch.no_grad():
        lru.recurrent_gate_bias.fill_(-200.0)  # r = sigmoid(-200) = 0: a = 1, 1 - a^2 = 0
        lru.recurrent_gate_weight.zero_()
    out = model(tokens(2, 9)).logits
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ---- 2. causality, generation, decode state --------------------------------------------------------


def test_future_tokens_do_not_change_past_logits() -> None:
    model = build()
    x = tokens(2, 17)
    y = x.clone()
    y[:, 9:] = tokens(2, 8, seed=1)
    assert_close(model(x).logits[:, :9], model(y).logits[:, :9])
    assert not torch.allclose(model(x).logits[:, 9:], model(y).logits[:, 9:])


@pytest.mark.parametrize("name", ("rglru", *PRESETS))
def test_cached_generation_equals_recomputation(name: str) -> None:
    model = build(torch.float32) if name == "rglru" else preset(name)
    prompt = tokens(2, 6, seed=3)
    cached = model.generate(prompt, 24, temperature=0.0)
    assert torch.equal(cached, model.generate(prompt, 24, temperature=0.0, use_cache=False))


@pytest.mark.parametrize("name, kinds", [
    ("griffin", [RGLRUState, RGLRUState, KVCache] * 2),
    ("jamba", [SSMState] * 4 + [KVCache] + [SSMState] * 3),
    ("samba", [SSMState, KVCache] * 2),
])
def test_hybrid_presets_decode_with_mixed_caches_equal_to_the_full_pass(name: str, kinds: list) -> None:
    model = preset(name, torch.float64)
    state = model.new_state()
    assert [type(s) for s in state.layers] == kinds
    x = tokens(2, 13)
    steps = [model(x[:, :5], state=state).logits] + [model(x[:, i : i + 1], state=state).logits for i in range(5, 13)]
    assert_close(torch.cat(steps, 1), model(x).logits)


def footprint(model: StackLM, n_tokens: int) -> list:
    state = model.new_state()
    with torch.no_grad():
        logits = model(tokens(2, 5), state=state).logits
        for _ in range(n_tokens):
            logits = model(logits[:, -1:].argmax(-1), state=state).logits
    return [(type(s).__name__, s.nbytes if hasattr(s, "nbytes") else s.length) for s in state.layers], state


def test_the_decode_state_does_not_grow_with_the_generated_length() -> None:
    model = build(torch.float32, rglru={"lru_width": 48, "conv1d_width": 4})
    (after_5, _), (after_50, state) = footprint(model, 5), footprint(model, 50)
    assert after_5 == after_50
    s = state.layers[0]  # conv window of conv1d_width - 1 = 3 inputs and h (b, lru_width) in fp32
    assert s.conv.shape == (2, 48, 3) and s.h.shape == (2, 48) and s.h.dtype == torch.float32
    assert s.nbytes == 2 * 48 * 3 * 4 + 2 * 48 * 4


@pytest.mark.parametrize("name", PRESETS)
def test_hybrid_recurrent_states_stay_flat_while_kv_caches_grow(name: str) -> None:
    """The recurrent layers' bytes are the same after 5 and 40 generated tokens; the attention layers' KV caches
    (sliding window included: the stack's cache keeps every position) grow by exactly the 35 extra tokens."""
    model = preset(name)
    (after_5, _), (after_40, _) = footprint(model, 5), footprint(model, 40)
    for (kind, short), (_, long) in zip(after_5, after_40):
        assert long == (short + 35 if kind == "KVCache" else short), (kind, short, long)


def test_stateful_training_carries_the_rglru_state_across_batches() -> None:
    model = build(torch.float32, stateful=True).train()
    model(tokens(2, 8))
    carried = model._carried.layers[0]
    assert carried.h.shape == (2, 32) and not carried.h.requires_grad
    model(tokens(2, 8, seed=1)).logits.sum().backward()  # from the carried (detached) state: no reset


def test_left_padding_is_refused_and_right_padding_changes_nothing_real() -> None:
    model = build()
    x = tokens(2, 10)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, 7:] = 0
    other = x.clone()
    other[0, 7:] = tokens(1, 3, seed=5)
    assert_close(model(x, attention_mask=mask).logits[0, :7], model(other, attention_mask=mask).logits[0, :7])
    with pytest.raises(ValueError, match="right padding only"):
        model(x, attention_mask=mask.flip(1))


# ---- 3. parity with Hugging Face -------------------------------------------------------------------

# fp32. Griffin: measured max |diff| ~8e-6 on logits of magnitude ~8 (HF computes 1 - exp(2 log a), we
# -expm1(2 log a); its scan is a loop, ours chunked). Jamba: ~5e-5 on logits ~5, after 8 layers whose residual
# stream reaches ~50 (relative ~5e-6 throughout, layer by layer; the MoE experts run as grouped matmuls here).
GRIFFIN_TOLERANCE = dict(rtol=1e-5, atol=3e-5)
JAMBA_TOLERANCE = dict(rtol=1e-4, atol=2e-4)


def perturb(hf: torch.nn.Module) -> torch.nn.Module:
    """Weights moved well away from their init, so a misplaced or transposed tensor shows."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name:  # RecurrentGemma's norms scale by 1 + w (init 0), Jamba's by w (init 1)
                p.add_(0.2 * noise)
            elif name.endswith(("A_log", "dt_proj.bias", "recurrent_param")):
                p.add_(0.3 * noise)
            elif name.endswith(".D") or "conv" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(0.2 * noise)
    return hf.eval()


def recurrent_gemma_config(**overrides):  # noqa: ANN201
    """Tiny, three layers (recurrent, recurrent, attention), window 8 < the 45-token inputs; exact GELU and full
    rotary embeddings (the two choices of RecurrentGemma's defaults the stack cannot express, pinned below)."""
    transformers = pytest.importorskip("transformers")
    values = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=96, num_hidden_layers=3, num_attention_heads=2,
                  num_key_value_heads=1, attention_window_size=8, hidden_activation="gelu", lru_width=32,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
                  pad_token_id=None, bos_token_id=None, eos_token_id=None)
    return transformers.RecurrentGemmaConfig(**{**values, **overrides})


def jamba_config(**overrides):  # noqa: ANN201
    """Tiny Jamba: 8 layers, attention at 4, MoE (4 experts, top-2) at the odd layers."""
    transformers = pytest.importorskip("transformers")
    values = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=8, num_attention_heads=4,
                  num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, mamba_d_state=8,
                  pad_token_id=None, bos_token_id=None, eos_token_id=None)
    return transformers.JambaConfig(**{**values, **overrides})


def without_inner_norms(hf: torch.nn.Module) -> torch.nn.Module:
    """Jamba's Mamba layers RMS-normalise dt, B and C; the stack's mamba does not: identities in their place."""
    for layer in hf.model.layers:
        if hasattr(layer, "mamba"):
            for norm in ("dt_layernorm", "b_layernorm", "c_layernorm"):
                setattr(layer.mamba, norm, torch.nn.Identity())
    return hf


def hf_pair(kind: str) -> tuple[torch.nn.Module, StackLM]:
    transformers = pytest.importorskip("transformers")
    if kind == "griffin":
        from plugins.decoder.hf_recurrent_gemma import stack_from_hf

        hf = perturb(transformers.RecurrentGemmaForCausalLM(recurrent_gemma_config()))
    else:
        from plugins.decoder.hf_jamba import stack_from_hf

        hf = perturb(without_inner_norms(transformers.JambaForCausalLM(jamba_config())))
    return hf, stack_from_hf(hf, max_seq_len=64).eval()


TOLERANCE = {"griffin": GRIFFIN_TOLERANCE, "jamba": JAMBA_TOLERANCE}


@pytest.mark.parametrize("kind", ["griffin", "jamba"])
def test_logits_equal_hugging_face(kind: str) -> None:
    hf, ours = hf_pair(kind)
    x = tokens(3, 45)  # several windows / chunks, a multiple of none
    with torch.no_grad():
        ref = hf(x).logits
    assert ref.abs().max() > 2  # far from uniform: a swapped tensor could not hide
    assert_close(ours(x).logits, ref, **TOLERANCE[kind])


@pytest.mark.parametrize("kind", ["griffin", "jamba"])
def test_greedy_generation_equals_hugging_face(kind: str) -> None:
    """HF's generate (its cache: sliding-window KV / Mamba states) against ours with the decode state: 20 tokens."""
    hf, ours = hf_pair(kind)
    prompt = tokens(2, 9, seed=2)
    ref = hf.generate(prompt, max_new_tokens=20, do_sample=False, attention_mask=torch.ones_like(prompt))
    assert torch.equal(ours.generate(prompt, 20, temperature=0.0), ref)


@pytest.mark.parametrize("kind", ["griffin", "jamba"])
def test_the_converter_round_trips_to_hugging_face(kind: str) -> None:
    _, ours = hf_pair(kind)
    if kind == "griffin":
        from plugins.decoder.hf_recurrent_gemma import hf_from_stack

        back = hf_from_stack(ours)
        assert back.config.layers_block_type == ["linear_attention", "linear_attention", "sliding_attention"]
    else:
        from plugins.decoder.hf_jamba import hf_from_stack

        with pytest.raises(ValueError, match="identity_inner_norms"):
            hf_from_stack(ours)
        back = hf_from_stack(ours, identity_inner_norms=True)
        assert back.config.layers_block_type == ["mamba"] * 4 + ["attention"] + ["mamba"] * 3
        assert back.config.layers_num_experts == [1, 4] * 4
    x = tokens(2, 21)
    with torch.no_grad():
        assert_close(back(x).logits, ours(x).logits, **TOLERANCE[kind])


def test_the_griffin_converter_maps_the_layer_pattern_and_recurrent_gemma_s_own_choices() -> None:
    """RecurrentGemma's block_types repeat to any depth: 5 layers are (r, r, a, r, r), mixer_every {3, 2} here."""
    from plugins.decoder.hf_recurrent_gemma import config_from_hf

    values = config_from_hf(recurrent_gemma_config(num_hidden_layers=5))
    cfg = make_config("decoder", **values)
    assert [s.name for s in cfg.token_mixers] == ["rglru", "rglru", "sliding_window", "rglru", "rglru"]
    assert (cfg.ffn, cfg.d_ff, cfg.n_kv_heads, cfg.sparse.window, cfg.logit_softcap) == ("geglu", 48, 1, 8, 30.0)


def test_pinned_recurrent_gemma_details_the_stack_reproduces() -> None:
    """By design of RecurrentGemma, reproduced exactly: (1) embeddings times sqrt(d) *rounded to bf16* (its
    normaliser is a bf16 buffer): 5.65625 for d = 32, not 5.65685; (2) logits soft-capped, cap * tanh(z / cap);
    (3) its RMSNorm scales by 1 + w: ours hold 1 + w."""
    hf, ours = hf_pair("griffin")
    assert ours.config.embed_scale == 5.65625 != math.sqrt(32)
    assert_close(ours.final_norm.weight, 1.0 + hf.model.final_norm.weight)
    x = tokens(2, 12)
    with torch.no_grad():
        capped = ours(x).logits
        ours.config.logit_softcap = None
        raw = ours(x).logits
    assert_close(capped, 30.0 * torch.tanh(raw / 30.0))
    assert raw.abs().max() > capped.abs().max()


def test_the_converters_refuse_what_the_stack_does_not_model() -> None:
    """RecurrentGemma's defaults: partial rotary embeddings (half of each head) and a tanh GELU in the MLP, which the
    stack cannot express. Jamba: the RMSNorms on dt, B, C inside every Mamba layer (a real JambaForCausalLM)."""
    transformers = pytest.importorskip("transformers")
    from plugins.decoder import hf_jamba, hf_recurrent_gemma

    with pytest.raises(ValueError, match="partial_rotary_factor"):
        hf_recurrent_gemma.config_from_hf(recurrent_gemma_config(rope_parameters=None))  # HF's default: 0.5
    with pytest.raises(ValueError, match="gelu_pytorch_tanh.*exact GELU"):
        hf_recurrent_gemma.config_from_hf(recurrent_gemma_config(hidden_activation="gelu_pytorch_tanh"))
    with pytest.raises(ValueError, match="RMS-normalise dt, B and C"):
        hf_jamba.stack_from_hf(transformers.JambaForCausalLM(jamba_config(num_hidden_layers=2, attn_layer_offset=1)))
    with pytest.raises(ValueError, match="mamba_proj_bias"):
        hf_jamba.config_from_hf(jamba_config(mamba_proj_bias=True))
    with pytest.raises(ValueError, match="RecurrentGemma config"):
        hf_recurrent_gemma.config_from_hf(jamba_config())
    with pytest.raises(ValueError, match="no RecurrentGemma counterpart: token mixers"):
        hf_recurrent_gemma.hf_config(make_config("decoder", layers=["rglru", "attention"], n_layers=2))
    with pytest.raises(ValueError, match="no Jamba counterpart: token mixers"):
        hf_jamba.hf_config(make_config("decoder", layers=["mamba", "rglru"], n_layers=2))


# ---- 4. statistics, stability, bad input -----------------------------------------------------------


def test_rglru_statistics_are_returned_per_layer_and_logged_by_family_metrics() -> None:
    model = build(torch.float32, n_layers=4, layers=["rglru", "attention", "rglru", "attention"], position="rope")
    stats = model(tokens(2, 12)).stats
    for key in ("rglru_decay", "rglru_long_memory", "rglru_input_gate", "rglru_state_norm"):
        assert stats[key].shape == (2,), key  # the two rglru layers (0 and 2)
    # At init the gates are ~0.5, so a = sigma(-p)^4 with sigma(-p)^2 uniform in [0.81, 0.998]: mean ~0.82, and
    # ~2% of the channels (0 or 1 of these 32) above 0.99.
    assert ((stats["rglru_decay"] > 0.7) & (stats["rglru_decay"] < 0.95)).all()
    assert ((stats["rglru_long_memory"] >= 0) & (stats["rglru_long_memory"] < 0.1)).all()
    assert_close(stats["rglru_input_gate"], torch.full((2,), 0.5), atol=0.02, rtol=0)
    assert (stats["rglru_state_norm"] > 0).all()
    metrics = stack_metrics(model.config)
    for metric in metrics.values():
        metric.update(stats)
    values = {name: m.compute() for name, m in metrics.items() if name.startswith("rglru/")}
    assert set(values) == {"rglru/decay", "rglru/long_memory", "rglru/input_gate", "rglru/state_norm"}
    assert all(set(v) == {"layer0", "layer2", "mean"} for v in values.values())


def test_the_recurrence_runs_in_fp32_under_bf16_autocast() -> None:
    model = build(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        state = model.new_state()
        out = model(tokens(2, 6), state=state)
    assert state.layers[0].h.dtype == torch.float32 and torch.isfinite(out.logits).all()


@pytest.mark.parametrize("field, value, message", [
    ("lru_width", 0, "must be an integer >= 1 or null"), ("lru_width", 2.5, ""),
    ("conv1d_width", 0, "must be an integer >= 1"), ("n_heads", -1, "must be an integer >= 1 or null"),
    ("chunk_size", 0, "must be an integer >= 1"), ("activation", "tanh", "one of"), ("chunk_size", "big", ""),
])
def test_each_rglru_option_is_validated_naming_its_field(field: str, value, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=rf"rglru\.{field}.*{message}"):
        make_config("decoder", mixer="rglru", rglru={field: value})


def test_gate_blocks_must_divide_the_width_and_options_need_an_rglru_layer() -> None:
    with pytest.raises(ConfigError, match=r"rglru.n_heads: must divide lru_width = 30 .*got 4 \(null: the stack's"):
        framework.build_model("decoder", mixer="rglru", d_model=30, n_heads=4)  # no attention: heads need not divide
    with pytest.raises(ConfigError, match=r"rglru.n_heads: must divide lru_width = 32 .*got 3$"):
        framework.build_model("decoder", mixer="rglru", d_model=32, rglru={"n_heads": 3})
    with pytest.raises(ConfigError, match=r"rglru: options are set but no layer uses a mixer configured by 'rglru'"):
        make_config("decoder", rglru={"chunk_size": 8})
    assert isinstance(build(d_model=30, n_heads=4, rglru={"n_heads": 5}).blocks[0].mixer, GriffinRecurrentBlock)


@pytest.mark.parametrize("field, value, message", [
    ("embed_scale", 0.0, r"must be > 0 or 'sqrt_d_model'"), ("embed_scale", "sqrt", ""),
    ("logit_softcap", -1.0, "must be > 0 or null"),
])
def test_embed_scale_and_logit_softcap_are_validated(field: str, value, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=rf"{field}.*{message}"):
        make_config("decoder", **{field: value})
