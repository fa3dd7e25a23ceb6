"""Issue 14, part 2: the linear-attention family (``gated_deltanet``, ``linear_attention``): the chunkwise kernel
against the recurrence and a naive reference written here (values and gradients), the mixers' causality, decode
state and generation, parity with Hugging Face's Qwen3-Next delta-rule functions and its ``Qwen3NextGatedDeltaNet``
layer, and config errors."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torch.testing import assert_close

from framework.config_schema import ConfigError
from framework.mixers.deltanet import GatedDeltaNet, LinearAttentionConfig
from framework.mixers.linear_scan import chunked, step
from framework.registry import make_config
from framework.stack import StackLM

VOCAB = 53
KINDS = ("gated_deltanet", "linear_attention")


def inputs(b: int, h: int, t: int, dk: int, dv: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    q, k = r(b, h, t, dk), F.normalize(r(b, h, t, dk), dim=-1)
    log_decay = -torch.rand(b, h, t, generator=gen, dtype=torch.float64)
    beta = torch.rand(b, h, t, generator=gen, dtype=torch.float64)
    return [q, k, r(b, h, t, dv), log_decay, beta, r(b, h, dk, dv)]


def naive_delta_rule(q, k, v, log_decay, beta, s0):  # noqa: ANN001, ANN201
    """The textbook form, S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, o_t = S_t^T q_t, one matrix
    product per step (the kernel never forms I - beta k k^T)."""
    s, outs = s0, []
    eye = torch.eye(k.shape[-1], dtype=k.dtype)
    for i in range(q.shape[2]):
        kt, a = k[:, :, i, :, None], log_decay[:, :, i, None, None].exp()
        bt = beta[:, :, i, None, None]
        s = a * ((eye - bt * kt @ kt.transpose(-1, -2)) @ s) + bt * kt @ v[:, :, i, None, :]
        outs.append((s.transpose(-1, -2) @ q[:, :, i, :, None])[..., 0])
    return torch.stack(outs, 2), s


def naive_linear_attention(q, k, v, log_decay, s0):  # noqa: ANN001, ANN201
    """Quadratic form: o_i = sum_{j <= i} e^{G_i - G_j} (q_i . k_j) v_j + e^{G_i} q_i^T S_0."""
    g = log_decay.cumsum(-1)
    t = q.shape[2]
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    weights = (g[..., :, None] - g[..., None, :]).masked_fill(~mask, float("-inf")).exp()
    o = ((q @ k.transpose(-1, -2)) * weights) @ v + (q * g.exp()[..., None]) @ s0
    s = g[..., -1:, None].exp() * s0 + (k * (g[..., -1:] - g).exp()[..., None]).transpose(-1, -2) @ v
    return o, s


@pytest.mark.parametrize("t, chunk", [(13, 4), (8, 8), (5, 16), (1, 4)])
@pytest.mark.parametrize("rule", ["delta", "linear"])
def test_chunked_equals_recurrence_equals_naive_in_values_and_gradients(t: int, chunk: int, rule: str) -> None:
    q, k, v, log_decay, beta, s0 = inputs(2, 3, t, 5, 4)
    beta = beta if rule == "delta" else None
    tensors = [q, k, v, log_decay, s0] + ([beta] if beta is not None else [])
    for x in tensors:
        x.requires_grad_(True)

    def run(fn):  # noqa: ANN001, ANN202
        o, s = fn()
        grads = torch.autograd.grad((o.sin().sum() + s.cos().sum()), tensors)
        return o, s, grads

    def recurrence():  # noqa: ANN202
        s, outs = s0, []
        for i in range(t):
            o, s = step(q[:, :, i], k[:, :, i], v[:, :, i], log_decay[:, :, i],
                        None if beta is None else beta[:, :, i], s)
            outs.append(o)
        return torch.stack(outs, 2), s

    reference = (lambda: naive_delta_rule(q, k, v, log_decay, beta, s0)) if beta is not None else (
        lambda: naive_linear_attention(q, k, v, log_decay, s0))
    want = run(reference)
    for got in (run(lambda: chunked(q, k, v, log_decay, beta, chunk, s0)), run(recurrence)):
        assert_close(got[0], want[0])
        assert_close(got[1], want[1])
        for g_got, g_want in zip(got[2], want[2]):
            assert_close(g_got, g_want)


def test_the_kernel_matches_hugging_face_s_delta_rule_functions() -> None:
    """Qwen3-Next's torch_chunk_gated_delta_rule and torch_recurrent_gated_delta_rule (queries L2-normalised and
    scaled inside them; ours take them prepared) on the same inputs, with an initial state."""
    pytest.importorskip("transformers")
    from transformers.models.qwen3_next.modeling_qwen3_next import (torch_chunk_gated_delta_rule,
                                                                    torch_recurrent_gated_delta_rule)

    q, k, v, log_decay, beta, s0 = (x.float() for x in inputs(2, 3, 11, 8, 6, seed=1))
    hf_args = [x.transpose(1, 2) for x in (q, k, v, log_decay, beta)]  # HF: (B, T, H, ...)
    ref_chunk, s_chunk = torch_chunk_gated_delta_rule(*hf_args[:3], g=hf_args[3], beta=hf_args[4], chunk_size=4,
                                                      initial_state=s0, output_final_state=True,
                                                      use_qk_l2norm_in_kernel=True)
    ref_rec, s_rec = torch_recurrent_gated_delta_rule(*hf_args[:3], g=hf_args[3], beta=hf_args[4], initial_state=s0,
                                                      output_final_state=True, use_qk_l2norm_in_kernel=True)
    qn = F.normalize(q, dim=-1, eps=1e-6) * q.shape[-1] ** -0.5
    kn = F.normalize(k, dim=-1, eps=1e-6)
    ours, s = chunked(qn, kn, v, log_decay, beta, 4, s0)
    for ref, ref_s in ((ref_chunk, s_chunk), (ref_rec, s_rec)):
        assert_close(ours.transpose(1, 2), ref, rtol=1e-4, atol=1e-5)
        assert_close(s, ref_s, rtol=1e-4, atol=1e-5)


def test_the_layer_equals_hugging_face_s_qwen3_next_gated_deltanet() -> None:
    """Same weights by name (grouped value heads: 4 value heads on 2 key heads), same output to 1e-5; our decode
    with the O(1) state reproduces the full forward too."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextGatedDeltaNet

    config = transformers.Qwen3NextConfig(hidden_size=32, linear_num_value_heads=4, linear_num_key_heads=2,
                                          linear_key_head_dim=8, linear_value_head_dim=6, linear_conv_kernel_dim=4,
                                          num_hidden_layers=1, layer_types=["linear_attention"], rms_norm_eps=1e-6)
    torch.manual_seed(0)
    hf = Qwen3NextGatedDeltaNet(config, 0).eval()
    ours = GatedDeltaNet(32, LinearAttentionConfig(n_heads=4, n_k_heads=2, head_k_dim=8, head_v_dim=6,
                                                   chunk_size=4), 4, 1e-6).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen) + (1.0 if name == "norm.weight" else 0.0))
    missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=True), None
    assert not missing.missing_keys and not missing.unexpected_keys and unexpected is None
    x = torch.randn(2, 13, 32, generator=gen)
    with torch.no_grad():
        ref = hf(x)
        assert_close(ours(x).output, ref, rtol=1e-4, atol=1e-5)
        state = ours.new_state()
        steps = [ours(x[:, :6], state=state).output] + [ours(x[:, i : i + 1], state=state).output for i in range(6, 13)]
        assert_close(torch.cat(steps, 1), ref, rtol=1e-4, atol=1e-5)


def lm(kind: str, **linear_attn) -> StackLM:
    torch.manual_seed(0)
    opts = {"chunk_size": 4, **linear_attn}
    cfg = make_config("decoder", mixer=kind, d_model=32, n_heads=4, n_layers=2, vocab_size=VOCAB, position="none",
                      norm="rmsnorm", init_std=0.1, linear_attn=opts)
    return StackLM(cfg).double().eval()


@pytest.mark.parametrize("kind, opts", [("gated_deltanet", {"n_k_heads": 2}), ("linear_attention", {}),
                                        ("linear_attention", {"decay": "retention", "conv_size": 0})])
def test_causal_decode_equals_recomputation_with_a_state_that_does_not_grow(kind: str, opts: dict) -> None:
    model = lm(kind, **opts)
    x = torch.randint(0, VOCAB, (2, 15), generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[:, 9:] = (y[:, 9:] + 1) % VOCAB
    assert_close(model(y).logits[:, :9], model(x).logits[:, :9])
    state = model.new_state()
    steps, sizes = [model(x[:, :6], state=state).logits], []
    for i in range(6, 15):
        sizes.append(sum(layer.nbytes for layer in state.layers))
        steps.append(model(x[:, i : i + 1], state=state).logits)
    assert_close(torch.cat(steps, 1), model(x).logits)
    assert len(set(sizes)) == 1  # the same bytes after 6 or 14 positions
    greedy = model.generate(x[:, :4], 10, temperature=0, use_cache=True)
    assert torch.equal(greedy, model.generate(x[:, :4], 10, temperature=0, use_cache=False))


@pytest.mark.parametrize("kind", ["gated_deltanet", "linear_attention"])
def test_the_default_chunk_follows_the_key_width_and_changes_no_value(kind: str) -> None:
    """chunk_size null picks the chunk from the head's key width (a speed knob measured on CPU); the values are the
    same as with any other chunk, over a length that spans several default chunks and a partial one."""
    assert [LinearAttentionConfig().chunk(dk) for dk in (8, 48, 128)] == [32, 48, 64]
    assert LinearAttentionConfig(chunk_size=4).chunk(128) == 4
    x = torch.randint(0, VOCAB, (2, 80), generator=torch.Generator().manual_seed(1))
    assert_close(lm(kind, chunk_size=None)(x).logits, lm(kind)(x).logits)


def test_retention_decays_and_plain_linear_attention_does_not() -> None:
    plain, retention = lm("linear_attention"), lm("linear_attention", decay="retention")
    gammas = retention.blocks[0].mixer.log_gamma.exp()
    assert_close(gammas, 1 - 2.0 ** (-5.0 - torch.arange(4.0, dtype=torch.float64)))
    for model in (plain, retention):
        model.eval()
        for block in model.blocks:
            block.mixer.record_stats = True
    x = torch.randint(0, VOCAB, (2, 9))
    assert "linear_decay" not in plain(x).stats
    assert_close(retention(x).stats["linear_decay"], gammas.mean().float().expand(2))


def test_statistics_of_a_gated_deltanet_stack() -> None:
    from framework.stack import stack_metrics

    model = lm("gated_deltanet")
    for block in model.blocks:
        block.mixer.record_stats = True
    stats = model(torch.randint(0, VOCAB, (2, 9))).stats
    assert ((stats["linear_beta"] > 0) & (stats["linear_beta"] < 1)).all()
    assert ((stats["linear_decay"] > 0) & (stats["linear_decay"] < 1)).all() and (stats["linear_state_norm"] > 0).all()
    # The init (Mamba-2's dt range) starts with long memories: mean decay per step ~0.87-0.94 here; Hugging Face's
    # dt_bias = 1 would start at e^-1.3 = 0.27 or less.
    assert (stats["linear_decay"] > 0.75).all()
    names = {n for n in stack_metrics(model.config) if n.startswith("linear/")}
    assert names == {"linear/state_norm", "linear/decay", "linear/long_memory", "linear/beta"}


@pytest.mark.parametrize("opts, field", [
    ({"n_k_heads": 3}, "linear_attn.n_k_heads"), ({"chunk_size": 0}, "linear_attn.chunk_size"),
    ({"conv_size": 0}, "linear_attn.conv_size"), ({"conv_size": -1}, "linear_attn.conv_size"),
    ({"head_k_dim": 0}, "linear_attn.head_k_dim"),
    ({"decay": "exp"}, "decay"),
])
def test_bad_linear_attention_options_are_named(opts: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make_config("decoder", mixer="gated_deltanet", d_model=32, n_heads=4, linear_attn=opts)


def test_any_layer_list_trains_with_the_linear_mixers() -> None:
    torch.manual_seed(0)
    cfg = make_config("decoder", layers=["mla", "gated_deltanet", "linear_attention", "attention"], n_layers=4,
                      d_model=32, n_heads=4, vocab_size=VOCAB, position="rope", mla={"qk_rope_head_dim": 4})
    model = StackLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, VOCAB, (4, 24), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(x[:, :-1]).logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses
