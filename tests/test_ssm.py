"""The state-space token mixers ``mamba`` and ``mamba2`` (framework/mixers/ssm.py, ssm_scan.py).

1. forms agree: chunked training scan == step-by-step recurrence == a naive reference written here (values and
   gradients, fp64, lengths not divisible by the chunk), and the mixers' full forward == token-by-token decode;
2. causality, cached generation == recomputation, a decode state whose size does not grow;
3. parity with Hugging Face's MambaForCausalLM (slow torch path) and Mamba2ForCausalLM (torch path): logits and
   greedy generation, weights copied by plugins/decoder/hf_mamba.py; our deliberate differences pinned;
4. statistics, stability (fp32 and bf16 autocast), bad input, and the train command lines.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F
from torch.testing import assert_close

import framework
from framework.config_schema import ConfigError
from framework.mixers.ssm import Mamba, Mamba2, SSMState
from framework.mixers.ssm_scan import selective_scan, selective_step, ssd_scan, ssd_step
from framework.nn.attention_stats import record_attention_stats
from framework.registry import make_config
from framework.stack import StackLM, stack_metrics

VOCAB = 48
KINDS = ("mamba", "mamba2")


def build(kind: str, dtype: torch.dtype = torch.float64, **overrides) -> StackLM:
    values = dict(vocab_size=VOCAB, d_model=32, n_layers=2, mixer=kind, ffn="none", position="none", norm="rmsnorm",
                  bias=False, ssm={"chunk_size": 4, **({"head_dim": 16} if kind == "mamba2" else {})})
    values.update(overrides)
    return framework.build_model("decoder", **values).to(dtype).eval()


def tokens(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


# ---- 1. forms agree ------------------------------------------------------------------------------


def naive_selective(x, dt, A, B, C, h0):  # noqa: ANN001, ANN201
    """Mamba-1 straight from the paper's recurrence, one position at a time."""
    h, ys = h0, []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t, :, None] * A)  # (b, D, N)
        h = decay * h + dt[:, t, :, None] * x[:, t, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1), h


def naive_ssd(x, dt, A, B, C, h0):  # noqa: ANN001, ANN201
    """Mamba-2 in its quadratic ("attention") form over the whole sequence: no chunks, no recurrence."""
    heads = x.shape[2]
    B, C = (v.repeat_interleave(heads // v.shape[2], dim=2) for v in (B, C))
    cum = torch.cumsum(dt * A, dim=1)  # (b, T, H)
    t = x.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    decay = torch.exp((cum[:, :, None] - cum[:, None, :]).masked_fill(~causal[None, :, :, None], -math.inf))
    scores = torch.einsum("bthn,bshn->btsh", C, B) * decay  # (b, t, s, H)
    y = torch.einsum("btsh,bshp->bthp", scores, x * dt[..., None])
    y = y + torch.einsum("bthn,bhpn->bthp", C, h0) * torch.exp(cum)[..., None]
    to_end = torch.exp(cum[:, -1:] - cum)  # (b, T, H)
    final = torch.einsum("bsh,bshp,bshn->bhpn", to_end, x * dt[..., None], B)
    final = final + torch.exp(cum[:, -1])[..., None, None] * h0
    return y, final


def stepwise(step, x, dt, A, B, C, h0):  # noqa: ANN001, ANN201
    h, ys = h0, []
    for t in range(x.shape[1]):
        y, h = step(h, x[:, t], dt[:, t], A, B[:, t], C[:, t])
        ys.append(y)
    return torch.stack(ys, 1), h


def mamba_inputs(b: int, t: int, d: int, n: int, gen: torch.Generator) -> list[torch.Tensor]:
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    return [r(b, t, d), F.softplus(r(b, t, d)), -torch.exp(r(d, n)), r(b, t, n), r(b, t, n), r(b, d, n)]


def mamba2_inputs(b: int, t: int, h: int, p: int, g: int, n: int, gen: torch.Generator) -> list[torch.Tensor]:
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    return [r(b, t, h, p), F.softplus(r(b, t, h)), -torch.exp(r(h)), r(b, t, g, n), r(b, t, g, n), r(b, h, p, n)]


def values_and_grads(fn, inputs: list[torch.Tensor]) -> list[torch.Tensor]:  # noqa: ANN001
    leaves = [v.clone().requires_grad_() for v in inputs]
    y, h = fn(*leaves)
    gen = torch.Generator().manual_seed(7)
    weigh = lambda v: (v * torch.randn(v.shape, generator=gen, dtype=v.dtype)).sum()  # noqa: E731
    loss = weigh(y) + weigh(h)
    return [y.detach(), h.detach(), *torch.autograd.grad(loss, leaves)]


@pytest.mark.parametrize("b, t, d, n, chunk", [(2, 13, 5, 3, 4), (1, 30, 4, 6, 7), (3, 9, 3, 2, 16), (2, 8, 2, 4, 1)])
def test_mamba_chunked_scan_equals_the_recurrence_and_the_naive_reference(b, t, d, n, chunk) -> None:
    inputs = mamba_inputs(b, t, d, n, torch.Generator().manual_seed(t))
    naive = values_and_grads(naive_selective, inputs)
    chunked = values_and_grads(lambda *v: selective_scan(*v[:5], chunk, v[5]), inputs)
    steps = values_and_grads(lambda *v: stepwise(selective_step, *v), inputs)
    for ref, a, s in zip(naive, chunked, steps):  # y, final state, then d/dx, dt, A, B, C, h0
        assert_close(a, ref)
        assert_close(s, ref)
    y0, h0 = selective_scan(*inputs[:5], chunk)  # no initial state = zeros
    assert_close((y0, h0), naive_selective(*inputs[:5], torch.zeros_like(inputs[5])))


@pytest.mark.parametrize("b, t, h, p, g, n, chunk", [(2, 13, 4, 3, 2, 5, 4), (1, 30, 2, 4, 1, 3, 7),
                                                     (2, 9, 3, 2, 3, 4, 16), (1, 6, 2, 2, 2, 2, 1)])
def test_mamba2_chunked_ssd_equals_the_recurrence_and_the_quadratic_form(b, t, h, p, g, n, chunk) -> None:
    inputs = mamba2_inputs(b, t, h, p, g, n, torch.Generator().manual_seed(t))
    naive = values_and_grads(naive_ssd, inputs)
    chunked = values_and_grads(lambda *v: ssd_scan(*v[:5], chunk, v[5]), inputs)
    steps = values_and_grads(lambda *v: stepwise(ssd_step, *v), inputs)
    for ref, a, s in zip(naive, chunked, steps):
        assert_close(a, ref)
        assert_close(s, ref)
    y0, h0 = ssd_scan(*inputs[:5], chunk)
    assert_close((y0, h0), naive_ssd(*inputs[:5], torch.zeros_like(inputs[5])))


@pytest.mark.parametrize("kind", KINDS)
def test_strong_decays_over_long_chunks_neither_overflow_nor_underflow_to_nan(kind: str) -> None:
    """fp32, a 96-step chunk, per-step log-decays up to about -300: every exponential is of a sum <= 0, so the
    chunked scan stays finite and equals the step-by-step recurrence."""
    gen = torch.Generator().manual_seed(0)
    if kind == "mamba":
        inputs = [v.float() for v in mamba_inputs(2, 100, 4, 3, gen)]
        inputs[1] = inputs[1] * 20
        inputs[2] = inputs[2] * 5
        scan, step = selective_scan, selective_step
    else:
        inputs = [v.float() for v in mamba2_inputs(2, 100, 2, 3, 1, 4, gen)]
        inputs[1] = inputs[1] * 20
        inputs[2] = inputs[2] * 5
        scan, step = ssd_scan, ssd_step
    assert (inputs[1][..., None] * inputs[2].reshape(-1)[None, None]).min() < -100
    y, h = scan(*inputs[:5], 96, inputs[5])
    ref_y, ref_h = stepwise(step, *inputs)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    assert_close(y, ref_y, rtol=1e-4, atol=1e-4)
    assert_close(h, ref_h, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_the_mixer_gives_the_same_outputs_in_one_pass_token_by_token_and_in_pieces(kind: str) -> None:
    """The conv window and SSM state carry exactly what the full pass sees (chunk 4, 19 tokens, fp64)."""
    model = build(kind)
    x = tokens(2, 19)
    full = model(x).logits
    state = model.new_state()
    steps = torch.cat([model(x[:, i : i + 1], state=state).logits for i in range(19)], 1)
    assert_close(steps, full)
    state = model.new_state()
    pieces = torch.cat([model(x[:, :7], state=state).logits, model(x[:, 7:15], state=state).logits,
                        model(x[:, 15:], state=state).logits], 1)
    assert_close(pieces, full)
    assert all(isinstance(s, SSMState) for s in state.layers) and state.length == 19


# ---- 2. causality, generation, decode state --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_future_tokens_do_not_change_past_logits(kind: str) -> None:
    model = build(kind)
    x = tokens(2, 17)
    y = x.clone()
    y[:, 9:] = tokens(2, 8, seed=1)
    assert_close(model(x).logits[:, :9], model(y).logits[:, :9])
    assert not torch.allclose(model(x).logits[:, 9:], model(y).logits[:, 9:])


@pytest.mark.parametrize("kind", KINDS)
def test_cached_generation_equals_recomputation(kind: str) -> None:
    model = build(kind, torch.float32)
    prompt = tokens(2, 6, seed=3)
    cached = model.generate(prompt, 24, temperature=0.0)
    recomputed = model.generate(prompt, 24, temperature=0.0, use_cache=False)
    assert torch.equal(cached, recomputed)


def state_footprint(model: StackLM, n_tokens: int) -> list[tuple]:
    state = model.new_state()
    with torch.no_grad():
        logits = model(tokens(2, 5), state=state).logits
        for _ in range(n_tokens):
            logits = model(logits[:, -1:].argmax(-1), state=state).logits
    return [(tuple(s.conv.shape), tuple(s.ssm.shape), s.ssm.dtype, s.nbytes) for s in state.layers]


@pytest.mark.parametrize("kind", KINDS)
def test_the_decode_state_does_not_grow_with_the_generated_length(kind: str) -> None:
    model = build(kind, torch.float32)
    after_5, after_50 = state_footprint(model, 5), state_footprint(model, 50)
    assert after_5 == after_50
    d_inner, n = 64, 16
    if kind == "mamba":  # conv window of d_conv - 1 = 3 inputs, state (b, d_inner, d_state), fp32
        assert after_5[0][:2] == ((2, d_inner, 3), (2, d_inner, n))
    else:  # the conv also sees B and C; state (b, heads, head_dim, d_state)
        assert after_5[0][:2] == ((2, d_inner + 2 * n, 3), (2, 4, 16, n))


def test_a_hybrid_stack_decodes_with_kv_caches_and_ssm_states_side_by_side() -> None:
    from framework.nn.kv_cache import KVCache

    model = build("mamba", n_layers=4, layers=["mamba", "attention", "mamba2", "attention"], position="rope",
                  n_heads=2, max_seq_len=64, ssm={"chunk_size": 4, "head_dim": 16})
    state = model.new_state()
    assert [type(s) for s in state.layers] == [SSMState, KVCache, SSMState, KVCache]
    x = tokens(2, 11)
    steps = [model(x[:, :4], state=state).logits] + [model(x[:, i : i + 1], state=state).logits for i in range(4, 11)]
    assert_close(torch.cat(steps, 1), model(x).logits)


def test_stateful_training_carries_the_ssm_state_across_batches() -> None:
    model = build("mamba2", torch.float32, stateful=True).train()
    model(tokens(2, 8))
    carried = model._carried.layers[0]
    assert carried.ssm.shape == (2, 4, 16, 16) and not carried.ssm.requires_grad
    out = model(tokens(2, 8, seed=1))  # starts from the carried (detached) state
    out.logits.sum().backward()


def test_left_padding_is_refused_and_right_padding_changes_nothing_real() -> None:
    model = build("mamba")
    x = tokens(2, 10)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[0, 7:] = 0
    other = x.clone()
    other[0, 7:] = tokens(1, 3, seed=5)
    assert_close(model(x, attention_mask=mask).logits[0, :7], model(other, attention_mask=mask).logits[0, :7])
    with pytest.raises(ValueError, match="right padding only"):
        model(x, attention_mask=mask.flip(1))


# ---- 3. parity with Hugging Face -------------------------------------------------------------------

HF_TOLERANCE = dict(rtol=1e-5, atol=1e-5)  # fp32; measured max |diff| ~2e-6 on logits of magnitude ~5


def hf_pair(kind: str) -> tuple[torch.nn.Module, StackLM]:
    """A tiny random HF model with weights moved well away from their init (so a misplaced tensor shows), and
    ours built from it by the converter users call."""
    transformers = pytest.importorskip("transformers")
    from plugins.decoder.hf_mamba import stack_from_hf

    common = dict(vocab_size=VOCAB, hidden_size=32, state_size=8, num_hidden_layers=2, pad_token_id=None,
                  bos_token_id=None, eos_token_id=None)
    if kind == "mamba":
        hf = transformers.MambaForCausalLM(transformers.MambaConfig(**common))
    else:  # 4 heads of 16, 2 groups; HF's chunk of 8 vs our 32: the duality form is exact either way
        hf = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(head_dim=16, num_heads=4, n_groups=2,
                                                                      chunk_size=8, **common))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name:
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith(("A_log", "dt_bias", "dt_proj.bias")):
                p.add_(0.3 * noise)
            elif name.endswith(".D") or "conv1d" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(0.2 * noise)
    return hf.eval(), stack_from_hf(hf).eval()


@pytest.mark.parametrize("kind", KINDS)
def test_logits_equal_hugging_face(kind: str) -> None:
    hf, ours = hf_pair(kind)
    x = tokens(3, 45)  # > one chunk on both sides, not a multiple of either
    with torch.no_grad():
        ref = hf(x).logits
    assert ref.abs().max() > 2  # far from uniform: a swapped tensor could not hide
    assert_close(ours(x).logits, ref, **HF_TOLERANCE)


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_generation_equals_hugging_face(kind: str) -> None:
    """HF's generate (its cache) against ours with the decode state: the same 20 tokens."""
    hf, ours = hf_pair(kind)
    prompt = tokens(2, 9, seed=2)
    ref = hf.generate(prompt, max_new_tokens=20, do_sample=False, attention_mask=torch.ones_like(prompt))
    assert torch.equal(ours.generate(prompt, 20, temperature=0.0), ref)


@pytest.mark.parametrize("kind", KINDS)
def test_the_converter_round_trips_to_hugging_face(kind: str) -> None:
    from plugins.decoder.hf_mamba import hf_from_stack

    _, ours = hf_pair(kind)
    back = hf_from_stack(ours)
    x = tokens(2, 21)
    with torch.no_grad():
        assert_close(back(x).logits, ours(x).logits, **HF_TOLERANCE)
    assert type(back).__name__ == ("MambaForCausalLM" if kind == "mamba" else "Mamba2ForCausalLM")


@pytest.mark.parametrize("kind", KINDS)
def test_pinned_difference_hf_zeroes_left_padding_we_refuse_it(kind: str) -> None:
    """By choice. HF multiplies the hidden states by the mask before in_proj and after the conv, so a left-padded
    prompt gives the unpadded logits there (exact only without in_proj bias: with one, in_proj(0) = bias reaches
    the conv). Ours, like the stack's other recurrent mixers, accepts right padding only and refuses the rest
    loudly rather than model padding inside the recurrence."""
    hf, ours = hf_pair(kind)
    x = tokens(1, 10, seed=4)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 10, dtype=torch.long)], 1)
    with torch.no_grad():
        assert_close(hf(padded, attention_mask=mask).logits[:, 3:], hf(x).logits, **HF_TOLERANCE)
    with pytest.raises(ValueError, match="right padding only"):
        ours(padded, attention_mask=mask)


def test_the_converter_refuses_what_the_stack_does_not_model() -> None:
    transformers = pytest.importorskip("transformers")
    from plugins.decoder.hf_mamba import config_from_hf, hf_config

    limited = transformers.Mamba2Config(hidden_size=32, head_dim=16, num_heads=4, time_step_limit=(0.0, 0.5))
    with pytest.raises(ValueError, match="time_step_limit"):  # HF clamps dt in its chunked path (not its step)
        config_from_hf(limited)
    with pytest.raises(ValueError, match="Mamba or Mamba-2"):
        config_from_hf(transformers.GPT2Config())
    with pytest.raises(ValueError, match="only a pure mamba or mamba2 stack"):
        hf_config(make_config("decoder", layers=["mamba", "attention"], n_layers=2))
    assert config_from_hf(transformers.MambaConfig(hidden_size=64))["ssm"] == {"dt_rank": 4}


# ---- 4. statistics, stability, bad input, train ----------------------------------------------------


def test_ssm_statistics_are_returned_per_layer_and_logged_by_family_metrics() -> None:
    model = build("mamba", torch.float32, n_layers=4, layers=["mamba", "attention", "mamba2", "attention"],
                  position="rope", n_heads=2, ssm={"chunk_size": 4, "head_dim": 16})
    assert set(model(tokens(2, 12)).stats) >= {"ssm_dt", "ssm_state_norm"}  # training steps: the cheap ones
    assert "ssm_decay" not in model(tokens(2, 12)).stats
    record_attention_stats(model, True)  # what the loop does for validation batches
    stats = model(tokens(2, 12)).stats
    for key in ("ssm_dt", "ssm_decay", "ssm_long_memory", "ssm_state_norm"):
        assert stats[key].shape == (2,), key  # the two SSM layers (0 and 2)
    assert (stats["ssm_dt"] > 0).all() and ((stats["ssm_decay"] > 0) & (stats["ssm_decay"] < 1)).all()
    assert ((stats["ssm_long_memory"] >= 0) & (stats["ssm_long_memory"] <= 1)).all()
    assert (stats["ssm_state_norm"] > 0).all()
    # At init dt is log-uniform in [0.001, 0.1] (mean ~0.0215), before the data moves it.
    assert 0.005 < float(stats["ssm_dt"][0]) < 0.06
    metrics = stack_metrics(model.config)
    for metric in metrics.values():
        metric.update(stats)
    values = {name: m.compute() for name, m in metrics.items() if name.startswith("ssm/")}
    assert set(values) == {"ssm/dt", "ssm/decay", "ssm/long_memory", "ssm/state_norm"}
    assert all(set(v) == {"layer0", "layer2", "mean"} for v in values.values())


def test_the_scan_runs_in_fp32_under_bf16_autocast() -> None:
    model = build("mamba", torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        state = model.new_state()
        model(tokens(2, 6), state=state)
    assert state.layers[0].ssm.dtype == torch.float32


@pytest.mark.parametrize("field, value, message", [
    ("d_state", 0, "must be an integer >= 1"), ("d_conv", 0, "must be an integer >= 1"),
    ("expand", 0, "must be an integer >= 1"), ("chunk_size", 0, "must be an integer >= 1"),
    ("head_dim", 0, "must be an integer >= 1"), ("n_groups", -1, "must be an integer >= 1"),
    ("dt_rank", 0, "must be 'auto' or an integer >= 1"), ("dt_rank", "big", ""),
    ("dt_min", 0.0, "must be > 0"), ("dt_max", 0.0001, r"must be >= dt_min \(0.001\)"),
    ("dt_init_floor", 0.0, r"must be in \(0, dt_max=0.1\]"), ("d_state", 2.5, ""), ("conv_bias", "yes", ""),
])
def test_each_ssm_option_is_validated_naming_its_field(field: str, value, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=rf"ssm\.{field}.*{message}"):
        make_config("decoder", mixer="mamba", ssm={field: value})


def test_mamba2_head_layout_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"ssm.head_dim: must divide d_inner = expand \* d_model = 64, got 48"):
        framework.build_model("decoder", mixer="mamba2", d_model=32, ssm={"head_dim": 48})
    with pytest.raises(ConfigError, match=r"ssm.n_groups: must divide the number of heads .* = 4\), got 3"):
        framework.build_model("decoder", mixer="mamba2", d_model=32, ssm={"head_dim": 16, "n_groups": 3})


def test_ssm_options_without_an_ssm_layer_are_an_error_and_heads_need_not_divide() -> None:
    with pytest.raises(ConfigError, match=r"ssm: options are set but no layer uses a mixer configured by 'ssm'"):
        make_config("decoder", ssm={"d_state": 8})
    assert make_config("decoder", mixer="mamba", d_model=30, n_heads=4).d_model == 30  # no attention: no heads
    assert isinstance(build("mamba", d_model=30).blocks[0].mixer, Mamba)
    assert isinstance(build("mamba2").blocks[1].mixer, Mamba2)


def test_the_issue_command_lines_train(tmp_path) -> None:
    """`archlab train model=mamba` and `model=gpt 'model.layers=[mamba,attention]' model.n_layers=2` (a few steps,
    small data): ssm/... metrics reach the logged metrics."""
    from hydra_compose import FAST, compose_train

    from framework.train import train

    for name, extra in (("mamba", ["model=mamba", "model.n_layers=2"]),
                        ("hybrid", ["model=gpt", "model.layers=[mamba,attention]", "model.n_layers=2"])):
        cfg = compose_train([*extra, *FAST, "callbacks=none", "data=synthetic", "model.d_model=32",
                             "model.n_heads=2", "sample.prompt=null"], tmp_path / name)
        metrics = train(cfg)["metrics"]
        for key in ("ssm/dt/layer0", "ssm/decay/mean", "ssm/long_memory/layer0", "ssm/state_norm/mean"):
            assert key in metrics and math.isfinite(metrics[key]), (name, key, sorted(metrics))


@pytest.mark.parametrize("t, chunk, state", [(256, 64, 6 * 256 * 16), (128, 64, 64 * 256 * 16), (1024, 64, 8 * 4096),
                                             (100, 7, 1), (5, 64, 1 << 20), (130, 64, 1 << 16)])
def test_mamba_scan_runs_one_chunk_only_when_a_step_of_the_batch_is_already_big(t, chunk, state) -> None:
    from framework.mixers.ssm_scan import STEP_ELEMENTS, _scan_chunk_length

    expected = t if state >= STEP_ELEMENTS else chunk  # small steps: the configured chunks amortise the dispatch
    assert _scan_chunk_length(t, chunk, state) == expected


def test_mamba_scan_of_a_big_batch_in_one_chunk_equals_the_configured_chunks() -> None:
    """A batch past STEP_ELEMENTS takes the one-chunk path; values and every gradient equal chunks of 4."""
    from framework.mixers.ssm_scan import STEP_ELEMENTS, _SelectiveScan

    b, t, d, n = 2, 12, 64, STEP_ELEMENTS // (2 * 64)
    inputs = mamba_inputs(b, t, d, n, torch.Generator().manual_seed(3))
    whole = values_and_grads(lambda *v: selective_scan(*v[:5], 4, v[5]), inputs)
    chunks = values_and_grads(lambda *v: _SelectiveScan.apply(*v[:5], v[5], 4), inputs)
    for a, c in zip(whole, chunks):
        assert_close(a, c)
