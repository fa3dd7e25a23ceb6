"""Issue 14, part 1: DeepSeek's multi-head latent attention (the ``mla`` token mixer) and DeepSeekMoE (sigmoid
routing, group limits, shared experts, auxiliary-loss-free balancing) — properties, the training loop's bias
update, and parity with Hugging Face's ``DeepseekV3ForCausalLM`` through the plugin's converter."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torch.testing import assert_close

from framework.config_schema import ConfigError
from framework.mixers.mla import MLAConfig, MultiHeadLatentAttention, cache_bytes_per_token
from framework.nn import SelfAttention
from framework.nn.moe import MoEConfig, MoEFeedForward
from framework.nn.moe.router import Affinity, token_choice
from framework.registry import make_config
from framework.stack import StackLM

VOCAB = 61


def tokens(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(seed))


def mla_lm(**mla) -> StackLM:
    torch.manual_seed(0)
    opts = {"kv_lora_rank": 12, "qk_rope_head_dim": 4, **mla}
    cfg = make_config("decoder", mixer="mla", position="rope", d_model=32, n_heads=4, n_layers=2, vocab_size=VOCAB,
                      norm="rmsnorm", bias=False, init_std=0.1, mla=opts)
    return StackLM(cfg).double().eval()


# ---- multi-head latent attention ----------------------------------------------------------------------


@pytest.mark.parametrize("q_lora_rank", [None, 16])
def test_absorbed_decode_equals_naive_decode_equals_recomputation(q_lora_rank: int | None) -> None:
    """A prompt, a 3-token chunk, then single tokens against the latent cache: the absorbed form (query and output
    absorb the up-projections), the naive form (expand the cache every step) and one full forward agree."""
    x = tokens(2, 14)
    outs = {}
    for absorb in (True, False):
        model = mla_lm(q_lora_rank=q_lora_rank, absorb=absorb)
        state = model.new_state()
        steps = [model(x[:, :6], state=state).logits, model(x[:, 6:9], state=state).logits]
        steps += [model(x[:, i : i + 1], state=state).logits for i in range(9, 14)]
        outs[absorb] = torch.cat(steps, dim=1)
        full = model(x).logits
    assert_close(outs[True], full, rtol=0, atol=1e-12)
    assert_close(outs[False], full, rtol=0, atol=1e-12)


def test_absorbed_decode_reads_the_up_projection_once_per_generation(monkeypatch) -> None:
    """A quantized kv_b_proj is dequantized (``dense``) once per layer and decode state, not once per token (it
    was every token: quantized MLA decode paid a dequantization per step); a weight replaced mid-generation
    (re-quantized, reloaded) is read again, so the cached copy never goes stale."""
    import framework.mixers.mla as mla_module
    from framework.quantization.apply import quantize_model
    from framework.quantization.config import QuantizationConfig

    calls = []
    real = mla_module.dense
    monkeypatch.setattr(mla_module, "dense", lambda w: calls.append(w) or real(w))
    model, x = mla_lm().float(), tokens(1, 13)
    quantize_model(model, QuantizationConfig(method="int8_weight_only"))
    layer = model.blocks[-1].mixer  # the last: earlier layers' outputs, and so its cached latents, stay as they are
    assert type(layer.kv_b_proj.weight) not in (torch.Tensor, torch.nn.Parameter)
    state = model.new_state()
    model(x[:, :5], state=state)  # the prefill runs the expanded form: no dense weight
    for i in range(5, 11):
        model(x[:, i : i + 1], state=state)
    assert len(calls) == len(model.blocks) == 2
    doubled = torch.nn.Linear(layer.kv_b_proj.in_features, layer.kv_b_proj.out_features, bias=False)
    doubled.weight.data = real(layer.kv_b_proj.weight) * 2
    quantize_model(doubled, QuantizationConfig(method="int8_weight_only"))
    layer.kv_b_proj.weight = doubled.weight
    step = model(x[:, 11:12], state=state).logits[:, -1]
    assert len(calls) == 3 and calls[-1] is layer.kv_b_proj.weight
    # its cache holds latents, which kv_b_proj does not touch: decoding on equals recomputing with the new weight
    assert_close(step, model(x[:, :12]).logits[:, -1], rtol=1e-4, atol=1e-4)


def test_the_cache_holds_the_latent_and_one_rope_key_only() -> None:
    """(kv_lora_rank + qk_rope_head_dim) numbers per position and layer, whatever the heads: 16 here against
    MHA's 2 * 4 heads * 8 = 64; and the formula the benchmark prints."""
    model = mla_lm()
    state = model.new_state()
    model(tokens(1, 9), state=state)
    for n in (9, 10, 11):
        layer = state.layers[0]
        assert layer.latent.shape == (1, n, 12) and layer.k_rope.shape == (1, n, 4)
        assert layer.bytes_per_token() == cache_bytes_per_token(model.config.mla, 8) == 16 * 8
        model(tokens(1, 1, seed=n), state=state)


def test_mla_is_causal_and_learns_through_every_projection() -> None:
    model = mla_lm(q_lora_rank=16).train()
    x = tokens(2, 12)
    y = x.clone()
    y[:, 7:] = (y[:, 7:] + 1) % VOCAB
    assert_close(model(y).logits[:, :7], model(x).logits[:, :7])
    model(x).logits.sum().backward()
    for name, p in model.named_parameters():
        if ".mixer." in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_with_an_identity_latent_mla_is_multi_head_attention() -> None:
    """Where the maths allows: kv_lora_rank = d_model, an identity down-projection, RoPE parts of the queries zero and
    inputs of unit RMS (so the latent norm is the identity) — then MLA computes SelfAttention's function with
    the same query/key/value/output weights (its query scaled for the wider qk head)."""
    d, h, rope = 16, 2, 2
    hd = d // h
    torch.manual_seed(0)
    mha = SelfAttention(d, h, position="none", bias=False).double()
    mla = MultiHeadLatentAttention(d, h, MLAConfig(kv_lora_rank=d, qk_rope_head_dim=rope, qk_nope_head_dim=hd),
                                   bias=False, rope=False, max_seq_len=32, rope_theta=1e4).double()
    with torch.no_grad():
        wq = mha.q_proj.weight.view(h, hd, d) * ((hd + rope) / hd) ** 0.5  # MLA scales by (hd + rope)^-1/2
        mla.q_proj.weight.copy_(torch.cat([wq, torch.zeros(h, rope, d, dtype=wq.dtype)], 1).view(-1, d))
        mla.kv_a_proj_with_mqa.weight.copy_(torch.cat([torch.eye(d), torch.randn(rope, d)]).double())
        kv = torch.cat([mha.k_proj.weight.view(h, hd, d), mha.v_proj.weight.view(h, hd, d)], 1)
        mla.kv_b_proj.weight.copy_(kv.reshape(-1, d))
        mla.o_proj.weight.copy_(mha.o_proj.weight)
    x = torch.randn(2, 10, d, dtype=torch.float64)
    x = x / x.pow(2).mean(-1, keepdim=True).sqrt()
    assert_close(mla(x), mha(x), rtol=1e-5, atol=1e-6)  # 1e-6: the latent norm's eps


@pytest.mark.parametrize("mla, field", [
    ({"kv_lora_rank": 64}, "mla.kv_lora_rank"),  # wider than d_model 32
    ({"q_lora_rank": 40}, "mla.q_lora_rank"),
    ({"qk_rope_head_dim": 3}, "qk_rope_head_dim"),  # odd
    ({"qk_rope_head_dim": 8}, "mla.qk_rope_head_dim"),  # = head_dim: no content dims left
    ({"kv_lora_rank": 0}, "kv_lora_rank"),
])
def test_bad_mla_options_are_named(mla: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make_config("decoder", mixer="mla", d_model=32, n_heads=4, mla=mla)


def test_mla_options_without_an_mla_layer_are_an_error() -> None:
    with pytest.raises(ConfigError, match="mla"):
        make_config("decoder", mla={"kv_lora_rank": 16})


# ---- DeepSeekMoE ---------------------------------------------------------------------------------------


def test_the_bias_chooses_but_never_weighs() -> None:
    """A bias on expert 3 moves tokens to it; the gates stay the sigmoid scores of the chosen experts, renormalised
    and scaled — the bias is not in them."""
    logits = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    plain = token_choice(logits, 2, "after_topk", None, affinity=Affinity("sigmoid", scale=2.5))
    bias = torch.zeros(8)
    bias[3] = 0.5
    biased = token_choice(logits, 2, "after_topk", None, affinity=Affinity("sigmoid", bias=bias, scale=2.5))
    assert biased.requested[3] > plain.requested[3]
    scores = logits.sigmoid()
    for r in (plain, biased):
        chosen = r.topk_experts  # (N, 2)
        expected = scores.gather(1, chosen)
        expected = 2.5 * expected / expected.sum(1, keepdim=True)
        # Routing lists assignments by expert; rebuild each (token, expert)'s gate.
        got = torch.zeros(64, 8).index_put_((r.token_idx, torch.repeat_interleave(torch.arange(8), r.counts)), r.gate)
        assert_close(got.gather(1, chosen), expected)


def test_group_limited_choice_stays_inside_the_best_groups() -> None:
    logits = torch.randn(200, 16, generator=torch.Generator().manual_seed(1))
    r = token_choice(logits, 3, "after_topk", None, affinity=Affinity("sigmoid", groups=4, topk_groups=2))
    scores = logits.sigmoid().view(200, 4, 4)
    best_groups = scores.topk(2, dim=-1).values.sum(-1).topk(2, dim=-1).indices  # (N, 2)
    groups_used = r.topk_experts // 4
    assert (groups_used[..., None] == best_groups[:, None, :]).any(-1).all()


def test_the_bias_update_moves_a_skewed_load_toward_balance() -> None:
    """Inputs that prefer experts 0 and 1 (max/mean load 3.3 of a possible 4): after 40 updates at rate 1e-2 the
    load is nearly even (measured 3.31 -> 1.09-1.16), while no gradient step happened (router weights untouched)."""
    torch.manual_seed(0)
    cfg = MoEConfig(n_experts=8, top_k=2, d_ff=16, score="sigmoid", bias_balance=True, bias_rate=1e-2)
    moe = MoEFeedForward(16, cfg).train()
    moe.init_weights(0.3)
    skew = torch.zeros(16)
    skew[0] = 3.0
    with torch.no_grad():
        moe.router.weight.weight[:2, 0] = 1.0  # experts 0 and 1 love feature 0
    x = torch.randn(4, 32, 16) + skew
    router = moe.router.weight.weight.clone()
    first = float(moe(x).stats["max_load"])
    for _ in range(40):
        moe.after_optimizer_step()
        moe(x)
    last = float(moe(x).stats["max_load"])
    assert first > 3.0 and last < 1.3, (first, last)
    assert torch.equal(moe.router.weight.weight, router)
    assert moe.expert_bias[:2].max() < moe.expert_bias[2:].min()  # the favoured two were pushed down most
    assert "expert_bias" in moe.state_dict() and "load_since_update" not in moe.state_dict()


def test_no_update_outside_training_and_without_bias_balance() -> None:
    moe = MoEFeedForward(8, MoEConfig(n_experts=4, d_ff=8, score="sigmoid", bias_balance=True)).eval()
    moe(torch.randn(2, 5, 8))
    moe.after_optimizer_step()
    assert moe.expert_bias.abs().sum() == 0  # evaluation forwards do not count
    plain = MoEFeedForward(8, MoEConfig(n_experts=4, d_ff=8, score="sigmoid")).train()
    plain(torch.randn(2, 5, 8))
    plain.after_optimizer_step()
    assert not hasattr(plain, "expert_bias")


def test_shared_experts_see_every_token_and_one_expert_is_a_dense_ffn() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 7, 16)
    one = MoEFeedForward(16, MoEConfig(n_experts=1, top_k=1, d_ff=24, score="sigmoid"))
    one.init_weights(0.2)
    from framework.nn.feedforward import GatedMLP

    dense = GatedMLP(16, 24, "silu")
    for name in ("gate_proj", "up_proj", "down_proj"):
        getattr(dense, name).weight.data.copy_(getattr(one.experts, name)[0])
    assert_close(one(x).output, dense(x))  # sigmoid gate renormalised over one expert = 1
    shared = MoEFeedForward(16, MoEConfig(n_experts=4, top_k=1, d_ff=24, n_shared_experts=1, score="sigmoid"))
    shared.init_weights(0.2)
    with torch.no_grad():
        shared.experts.down_proj.zero_()  # routed experts silent: what is left is the shared expert, on every token
    assert_close(shared(x).output, shared.shared(x))
    assert shared.shared(x).abs().min() > 0


def test_sequence_balance_loss_is_one_when_balanced_and_larger_when_not() -> None:
    from framework.nn.moe.layer import sequence_balance_loss

    cfg = MoEConfig(n_experts=4, top_k=1, d_ff=8, score="sigmoid", seq_balance_loss_weight=1.0)
    moe = MoEFeedForward(8, cfg)
    even = torch.eye(4).repeat(1, 2) * 5  # 4 tokens, each preferring its own expert
    flat = even.repeat(2, 1)  # 2 sequences x 4 tokens
    with torch.no_grad():
        moe.router.weight.weight.copy_(torch.eye(4, 8) * 5)
    balanced = moe.route(moe.router(flat), None)
    assert_close(sequence_balance_loss(balanced, 2, 4, None), torch.tensor(1.0), atol=0.05, rtol=0)
    skewed = moe.route(moe.router(torch.eye(8)[[0] * 8] * 5), None)
    # All on expert 0 (logit 25): f_0 = E / k = 4, P_0 = sigmoid(25) / (sigmoid(25) + 3 sigmoid(0)) = 0.4: loss 1.6.
    assert_close(sequence_balance_loss(skewed, 2, 4, None), torch.tensor(4 * 1 / (1 + 1.5)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("moe, field", [
    ({"top_k": 9}, "top_k"), ({"bias_rate": -0.1}, "bias_rate"), ({"n_groups": 3}, "n_groups"),
    ({"n_groups": 4, "topk_groups": 5}, "topk_groups"), ({"n_groups": 4, "topk_groups": 1, "top_k": 3}, "top_k"),
    ({"routed_scaling": 0}, "routed_scaling"), ({"score": "tanh"}, "score"),
])
def test_bad_deepseek_moe_options_are_named(moe: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make_config("decoder", ffn="moe", moe={"n_experts": 8, **moe})


def test_training_moves_the_bias_after_each_optimizer_step_and_checkpoints_it(tmp_path) -> None:
    """The deepseek preset through the training loop: after 6 optimizer steps each MoE layer's bias has moved by
    multiples of bias_rate (at most 6 of them), it is saved in the checkpoint, and the balance is logged."""
    import csv

    from framework.train import train
    from hydra_compose import FAST, compose_train

    cfg = compose_train([*FAST, "model=deepseek", "model.d_model=32", "model.n_heads=2", "model.mla.q_lora_rank=16",
                         "model.mla.qk_nope_head_dim=8", "model.mla.v_head_dim=8", "model.mla.qk_rope_head_dim=4",
                         "trainer.max_steps=6", "trainer.log_every_n_steps=1",
                         "sample.prompt=null"], tmp_path)
    train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    biases = [v for k, v in ckpt["state_dict"].items() if k.endswith("ffn.expert_bias")]
    assert len(biases) == 3  # layers 1-3 (layer 0 is dense)
    for bias in biases:
        steps = bias / 1e-3
        assert_close(steps, steps.round(), atol=1e-3, rtol=0)
        assert 0 < steps.abs().max() <= 6
    (metrics,) = tmp_path.glob("csv/**/metrics.csv")
    header = next(csv.reader(metrics.open()))
    assert "train/moe/max_over_mean_load/mean" in header or "moe/max_over_mean_load/mean" in header


# ---- parity with Hugging Face's DeepseekV3 ------------------------------------------------------------


def deepseek_config(**overrides):  # noqa: ANN201
    transformers = pytest.importorskip("transformers")
    values = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
                  num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
                  n_routed_experts=8, num_experts_per_tok=3, routed_scaling_factor=2.5, n_group=4, topk_group=2,
                  first_k_dense_replace=1, kv_lora_rank=12, q_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=8,
                  v_head_dim=6, max_position_embeddings=64, rope_interleave=True,
                  pad_token_id=None, bos_token_id=None, eos_token_id=None)
    return transformers.DeepseekV3Config(**{**values, **overrides})


def hf_pair(**overrides) -> tuple[torch.nn.Module, StackLM]:
    transformers = pytest.importorskip("transformers")
    from plugins.decoder.hf_deepseek_v3 import stack_from_hf

    torch.manual_seed(0)
    hf = transformers.DeepseekV3ForCausalLM(deepseek_config(**overrides)).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in hf.named_parameters():  # well away from init, so a misplaced tensor shows
            p.add_(0.2 * torch.randn(p.shape, generator=gen)) if "norm" in name else p.copy_(
                0.15 * torch.randn(p.shape, generator=gen))
        for name, buf in hf.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.copy_(0.3 * torch.randn(buf.shape, generator=gen))  # a non-zero bias on both sides
    return hf, stack_from_hf(hf).eval()


@pytest.mark.parametrize("overrides", [{}, {"q_lora_rank": None, "rope_interleave": False}],
                         ids=["low_rank_q_interleaved_rope", "full_rank_q"])
def test_logits_equal_hugging_face_deepseek_v3(overrides: dict) -> None:
    hf, ours = hf_pair(**overrides)
    x = tokens(3, 17)
    with torch.no_grad():
        ref = hf(x).logits
    assert ref.abs().max() > 2
    assert_close(ours(x).logits, ref, rtol=1e-4, atol=1e-4)
    assert ours.blocks[1].ffn.expert_bias.abs().sum() > 0


def test_decode_with_the_latent_cache_equals_hugging_face() -> None:
    """Greedy generation with our compressed (absorbed) cache == HF generate; the last position's logits after
    our cached decode == HF's full-sequence forward."""
    hf, ours = hf_pair()
    prompt = tokens(2, 7, seed=3)
    ref = hf.generate(prompt, max_new_tokens=12, do_sample=False, attention_mask=torch.ones_like(prompt))
    out = ours.generate(prompt, 12, temperature=0.0)
    assert torch.equal(out, ref)
    state = ours.new_state()
    with torch.no_grad():
        ours(ref[:, :-1], state=state)
        last = ours(ref[:, -1:], state=state).logits[:, -1]
        assert_close(last, hf(ref).logits[:, -1], rtol=1e-4, atol=1e-4)


def test_the_converter_round_trips_and_refuses_what_it_cannot_map() -> None:
    from plugins.decoder.hf_deepseek_v3 import config_from_hf, hf_from_stack

    _, ours = hf_pair()
    back = hf_from_stack(ours)
    assert back.config.rope_interleave is False and back.config.first_k_dense_replace == 1
    x = tokens(2, 11)
    with torch.no_grad():
        assert_close(back(x).logits, ours(x).logits, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="YaRN"):
        config_from_hf(deepseek_config(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4,
                                                        "original_max_position_embeddings": 16}))
    gpt = StackLM(make_config("decoder", d_model=32, n_heads=4, vocab_size=VOCAB))
    with pytest.raises(ValueError, match="no DeepseekV3 counterpart"):
        hf_from_stack(gpt)


def test_a_deepseek_stack_trains_in_any_layer_list() -> None:
    """mla beside other mixers (the issue's ``model.layers=[mla, ...]``) with the sigmoid MoE: loss falls."""
    torch.manual_seed(0)
    cfg = make_config("decoder", layers=["mla", "mamba", "mla", "attention"], n_layers=4, d_model=32, n_heads=4,
                      vocab_size=VOCAB, position="rope", ffn="moe",
                      moe={"n_experts": 4, "top_k": 2, "d_ff": 16, "score": "sigmoid", "bias_balance": True},
                      mla={"kv_lora_rank": 16, "qk_rope_head_dim": 4})
    model = StackLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = tokens(4, 24)
    losses = []
    for _ in range(25):
        out = model(x[:, :-1])
        loss = F.cross_entropy(out.logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1)) + out.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses
