"""The decoder stack with attention layers (the ``gpt``/``llama`` presets) at tiny sizes: causality, KV
cache, padding, gradients, config validation, sampling and weight tying, parametrized over the flags that
change the computation."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F
from torch.testing import assert_close

import framework
from framework.generation import sample_next_token
from framework.stack import StackConfig as GPTConfig, StackLM as GPT

POSITIONS = ["learned", "sinusoidal", "rope", "alibi", "none"]
RELATIVE_POSITIONS = ["rope", "alibi", "none"]  # left padding does not move what these models see
VOCAB = 32
LLAMA_LIKE = dict(position="rope", norm="rmsnorm", norm_eps=1e-6, ffn="swiglu", bias=False, n_kv_heads=2,
                  tie_weights=False)


def tiny_model(dtype: torch.dtype = torch.float64, **overrides) -> GPT:
    """A 2-layer, 16-wide model in eval mode. init_std is large so that logits are far from uniform
    and a leak between positions shows up far above rounding error."""
    cfg = dict(vocab_size=VOCAB, d_model=16, n_layers=2, n_heads=4, max_seq_len=16, init_std=0.2)
    cfg.update(overrides)
    return GPT(GPTConfig(**cfg)).to(dtype).eval()


def random_tokens(*shape: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, shape)


def different_tokens(x: torch.Tensor) -> torch.Tensor:
    """Tokens that differ from ``x`` everywhere."""
    return (x + torch.randint(1, VOCAB, x.shape)) % VOCAB


def greedy_reference(model: GPT, prompt: torch.Tensor, n_new: int) -> torch.Tensor:
    """Greedy decoding written the obvious way: full forward over the last max_seq_len tokens."""
    tokens = prompt
    for _ in range(n_new):
        logits = model(tokens[:, -model.config.max_seq_len :]).logits[:, -1]
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    return tokens


# --- 1. causality -----------------------------------------------------------------------------


def assert_causal(model: GPT, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """Row t of the batch has tokens (and mask) after position t replaced; logits up to t must not move,
    and those after t must (so the check is sensitive)."""
    t_len = x.shape[1]
    variants, masks = [x], [mask] if mask is not None else None
    for t in range(t_len - 1):
        y = x.clone()
        y[:, t + 1 :] = different_tokens(x[:, t + 1 :])
        variants.append(y)
        if mask is not None:
            m = mask.clone()
            m[:, t + 1 :] = torch.randint(0, 2, m[:, t + 1 :].shape)
            masks.append(m)
    batch = torch.cat(variants)  # ((T) * B, T): one forward for all variants
    logits = model(batch, attention_mask=torch.cat(masks) if masks else None).logits
    logits = logits.view(t_len, x.shape[0], t_len, -1)
    reference = logits[0]
    for t in range(t_len - 1):
        assert_close(logits[t + 1, :, : t + 1], reference[:, : t + 1], msg=lambda m: f"leak into position <= {t}: {m}")
        assert not torch.allclose(logits[t + 1, :, t + 1 :], reference[:, t + 1 :]), "later logits ignore their tokens"


@pytest.mark.parametrize("gqa", [False, True], ids=["mha", "gqa"])
@pytest.mark.parametrize("pre_norm", [True, False], ids=["prenorm", "postnorm"])
@pytest.mark.parametrize("ffn", ["mlp", "swiglu", "geglu"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("position", POSITIONS)
def test_causal(position: str, norm: str, ffn: str, pre_norm: bool, gqa: bool) -> None:
    model = tiny_model(position=position, norm=norm, ffn=ffn, pre_norm=pre_norm, n_kv_heads=2 if gqa else None)
    assert_causal(model, random_tokens(2, 8))


@pytest.mark.parametrize("pre_norm", [True, False], ids=["prenorm", "postnorm"])
@pytest.mark.parametrize("gqa", [False, True], ids=["mha", "gqa"])
@pytest.mark.parametrize("position", POSITIONS)
def test_causal_with_padding_mask(position: str, gqa: bool, pre_norm: bool) -> None:
    model = tiny_model(position=position, pre_norm=pre_norm, n_kv_heads=2 if gqa else None)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 0, 1, 1, 1]])
    assert_causal(model, random_tokens(3, 8), mask)


# --- 2. KV cache ------------------------------------------------------------------------------


@pytest.mark.parametrize("gqa", [False, True], ids=["mha", "gqa"])
@pytest.mark.parametrize("position", POSITIONS)
def test_cached_steps_match_full_forward(position: str, gqa: bool) -> None:
    """Feeding a sequence in chunks (prefill, single tokens, a multi-token chunk) through the cache gives
    the full-forward logits at every position."""
    model = tiny_model(torch.float32, position=position, n_kv_heads=2 if gqa else None)
    x = random_tokens(2, 11)
    full = model(x).logits
    cache = model.new_state()
    pieces, start = [], 0
    for size in (4, 1, 1, 3, 1, 1):
        pieces.append(model(x[:, start : start + size], state=cache).logits)
        start += size
        assert cache.length == start
    assert_close(torch.cat(pieces, dim=1), full)


@pytest.mark.parametrize("position", POSITIONS)
def test_cached_steps_with_padding_mask(position: str) -> None:
    """With a (growing) attention mask the cache still reproduces the full forward at real positions."""
    model = tiny_model(torch.float32, position=position, n_kv_heads=2)
    x = random_tokens(2, 9)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, :3] = 0  # left padding in the prompt of row 0
    full = model(x, attention_mask=mask).logits
    cache = model.new_state()
    pieces = [model(x[:, :5], attention_mask=mask[:, :5], state=cache).logits]
    for s in range(5, 9):
        pieces.append(model(x[:, s : s + 1], attention_mask=mask[:, : s + 1], state=cache).logits)
    real = mask.bool()
    assert_close(torch.cat(pieces, dim=1)[real], full[real])


@pytest.mark.parametrize("prompt_len", [3, 13], ids=["short_prompt", "prompt_over_limit"])
@pytest.mark.parametrize("gqa", [False, True], ids=["mha", "gqa"])
@pytest.mark.parametrize("position", POSITIONS)
def test_generate_cache_matches_recompute(position: str, gqa: bool, prompt_len: int) -> None:
    """Greedy generation with and without the KV cache agree, also while running past max_seq_len
    (the cache is rebuilt over the cropped context), and both agree with the obvious loop."""
    model = tiny_model(position=position, max_seq_len=10, init_std=0.5, n_kv_heads=2 if gqa else None)
    prompt = random_tokens(4, prompt_len)
    cached = model.generate(prompt, max_new_tokens=16, temperature=0, use_cache=True)
    recomputed = model.generate(prompt, max_new_tokens=16, temperature=0, use_cache=False)
    assert cached.shape == (4, prompt_len + 16)
    assert torch.equal(cached[:, :prompt_len], prompt)
    assert torch.equal(cached, recomputed)
    assert torch.equal(cached, greedy_reference(model, prompt, 16))


def test_generate_restores_training_mode() -> None:
    model = tiny_model().train()
    model.generate(random_tokens(1, 3), max_new_tokens=2, temperature=0)
    assert model.training


@pytest.mark.parametrize("position", ["learned", "sinusoidal"])
def test_forward_past_position_table_raises(position: str) -> None:
    model = tiny_model(position=position, max_seq_len=8)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(random_tokens(1, 9))


# --- 3. padding -------------------------------------------------------------------------------


def padded_batch(seqs: list[torch.Tensor], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad with random (not special) token ids, so that only the mask can hide them."""
    width = max(len(s) for s in seqs)
    ids = random_tokens(len(seqs), width)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        where = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, where], mask[i, where] = s, 1
    return ids, mask


@pytest.mark.parametrize("gqa", [False, True], ids=["mha", "gqa"])
@pytest.mark.parametrize("position", POSITIONS)
def test_right_padding_matches_unpadded(position: str, gqa: bool) -> None:
    model = tiny_model(position=position, n_kv_heads=2 if gqa else None)
    seqs = [random_tokens(n) for n in (8, 5, 2)]
    ids, mask = padded_batch(seqs, left=False)
    logits = model(ids, attention_mask=mask).logits
    for i, s in enumerate(seqs):
        assert_close(logits[i, : len(s)], model(s[None]).logits[0])
    assert torch.isfinite(logits).all()  # padded rows are garbage but never NaN


@pytest.mark.parametrize("pre_norm", [True, False], ids=["prenorm", "postnorm"])
@pytest.mark.parametrize("gqa", [False, True], ids=["mha", "gqa"])
@pytest.mark.parametrize("position", RELATIVE_POSITIONS)
def test_left_padding_matches_unpadded(position: str, gqa: bool, pre_norm: bool) -> None:
    """Only relative (or no) positions promise this: learned/sinusoidal tables shift under left padding."""
    model = tiny_model(position=position, pre_norm=pre_norm, n_kv_heads=2 if gqa else None)
    seqs = [random_tokens(n) for n in (8, 5, 2)]
    ids, mask = padded_batch(seqs, left=True)
    logits = model(ids, attention_mask=mask).logits
    for i, s in enumerate(seqs):
        assert_close(logits[i, -len(s) :], model(s[None]).logits[0])
    assert torch.isfinite(logits).all()


def test_all_ones_mask_equals_no_mask() -> None:
    model = tiny_model(position="alibi", n_kv_heads=2)
    x = random_tokens(2, 7)
    assert_close(model(x, attention_mask=torch.ones_like(x)).logits, model(x).logits)


# --- 4. gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        LLAMA_LIKE,
        dict(position="alibi", pre_norm=False, ffn="geglu", n_kv_heads=1),
        dict(position="sinusoidal", norm="rmsnorm", activation="relu"),
    ],
    ids=["default", "llama_like", "alibi_postnorm_geglu_mqa", "sinusoidal_rmsnorm_relu"],
)
def test_every_parameter_gets_a_gradient(overrides: dict) -> None:
    model = GPT(GPTConfig(vocab_size=VOCAB, d_model=16, n_layers=2, n_heads=4, max_seq_len=8, **overrides))
    model.train()
    x, targets = random_tokens(2, 8), random_tokens(2, 8)  # T = max_seq_len: every position row is used
    out = model(x)
    loss = F.cross_entropy(out.logits.flatten(0, 1), targets.flatten()) + out.aux_loss
    loss.backward()
    for name, p in model.named_parameters():
        assert p.requires_grad, name
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_forward_returns_stats_as_values() -> None:
    model = tiny_model(n_layers=3)
    out = model(random_tokens(2, 5))
    assert out.logits.shape == (2, 5, VOCAB)
    assert out.aux_loss.shape == () and out.aux_loss.item() == 0.0
    assert out.stats["resid/rms"].shape == (3,)


def test_dropout_only_acts_in_training() -> None:
    model = tiny_model(dropout=0.5)
    x = random_tokens(2, 6)
    assert_close(model(x).logits, model(x).logits)
    model.train()
    assert not torch.allclose(model(x).logits, model(x).logits)


# --- 5. config validation ---------------------------------------------------------------------


def test_build_model_through_registry_applies_overrides() -> None:
    model = framework.build_model("decoder", vocab_size=VOCAB, d_model=16, n_layers=1, n_heads=4, **LLAMA_LIKE)
    assert isinstance(model, GPT)
    assert model.config.position == "rope" and model.config.n_kv_heads == 2 and not model.config.tie_weights
    assert model.blocks[0].mixer.k_proj.out_features == 2 * 4  # n_kv_heads * head_dim


def test_d_model_not_divisible_by_heads() -> None:
    with pytest.raises(ValueError, match="d_model"):
        framework.build_model("decoder", d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="d_model"):
        GPTConfig(d_model=30, n_heads=4)


def test_unknown_key_is_named_with_allowed_fields() -> None:
    with pytest.raises(ValueError) as err:
        framework.build_model("decoder", n_layer=2)
    message = str(err.value)
    assert "n_layer" in message and "allowed" in message
    for field in ("n_layers", "d_model", "position", "n_kv_heads"):
        assert field in message


@pytest.mark.parametrize("value", ["x", 2.5, True])
def test_wrong_type_is_named(value) -> None:
    with pytest.raises(ValueError, match="n_layers") as err:
        framework.build_model("decoder", n_layers=value)
    assert "int" in str(err.value)


@pytest.mark.parametrize(
    "field, allowed",
    [
        ("position", ["learned", "sinusoidal", "rope", "alibi", "none"]),
        ("norm", ["layernorm", "rmsnorm"]),
        ("ffn", ["mlp", "swiglu", "geglu"]),
        ("activation", ["gelu", "gelu_tanh", "relu", "silu"]),
    ],
)
def test_bad_choice_lists_allowed_values(field: str, allowed: list[str]) -> None:
    with pytest.raises(ValueError, match=field) as err:
        framework.build_model("decoder", **{field: "foo"})
    for choice in allowed:
        assert repr(choice) in str(err.value)


@pytest.mark.parametrize("n_kv_heads", [3, 0, 8])
def test_n_kv_heads_must_divide_n_heads(n_kv_heads: int) -> None:
    with pytest.raises(ValueError, match="n_kv_heads"):
        framework.build_model("decoder", n_heads=4, n_kv_heads=n_kv_heads)


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_dropout_out_of_range(dropout: float) -> None:
    with pytest.raises(ValueError, match="dropout"):
        framework.build_model("decoder", dropout=dropout)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(vocab_size=1), "vocab_size"),
        (dict(n_layers=0), "n_layers"),
        (dict(d_ff=0), "d_ff"),
        (dict(norm_eps=0.0), "norm_eps"),
        (dict(rope_theta=0.0), "rope_theta"),  # would give NaN rotations
        (dict(position="rope", d_model=12, n_heads=4), "position"),  # odd head_dim
    ],
)
def test_other_invalid_values_are_named(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        framework.build_model("decoder", **overrides)


# --- 6. sampling ------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 1.0, 5.0])
def test_top_k_1_and_tiny_top_p_are_greedy(temperature: float) -> None:
    logits = torch.randn(64, 50)
    greedy = sample_next_token(logits, temperature=0)
    assert torch.equal(greedy, logits.argmax(-1, keepdim=True))
    assert torch.equal(sample_next_token(logits, temperature, top_k=1), greedy)
    assert torch.equal(sample_next_token(logits, temperature, top_p=1e-6), greedy)


def test_top_k_samples_only_the_k_best() -> None:
    row = torch.randn(20)
    samples = sample_next_token(row.expand(4000, -1), temperature=1.0, top_k=3).squeeze(-1)
    assert set(samples.tolist()) == set(row.topk(3).indices.tolist())


def test_top_p_samples_only_the_nucleus() -> None:
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    # Mass before token 3 (0.3) is 0.5 < 0.7: kept; before token 2 it is 0.8 >= 0.7: dropped.
    samples = sample_next_token(probs.log().expand(4000, -1), temperature=1.0, top_p=0.7).squeeze(-1)
    assert set(samples.tolist()) == {1, 3}
    share = (samples == 1).float().mean().item()
    assert abs(share - 0.5 / 0.8) < 0.05  # renormalised inside the nucleus


def test_sampling_follows_temperature() -> None:
    logits = torch.tensor([[2.0, 0.0]]).expand(4000, -1)
    hot = (sample_next_token(logits, temperature=100.0).squeeze(-1) == 0).float().mean().item()
    cold = (sample_next_token(logits, temperature=0.1).squeeze(-1) == 0).float().mean().item()
    assert abs(hot - 0.5) < 0.05 and cold > 0.99


def test_generate_top_k_1_and_tiny_top_p_equal_greedy() -> None:
    model = tiny_model(**LLAMA_LIKE)
    prompt = random_tokens(2, 4)
    greedy = model.generate(prompt, max_new_tokens=6, temperature=0)
    assert torch.equal(model.generate(prompt, max_new_tokens=6, temperature=1.0, top_k=1), greedy)
    assert torch.equal(model.generate(prompt, max_new_tokens=6, temperature=1.0, top_p=1e-6), greedy)


@pytest.mark.parametrize("use_cache", [True, False])
def test_seeded_generation_is_reproducible(use_cache: bool) -> None:
    model = tiny_model(init_std=0.02)  # near-uniform logits: samples really are random
    prompt = random_tokens(3, 4)

    def sample(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return model.generate(prompt, 10, temperature=1.0, top_k=20, top_p=0.95, use_cache=use_cache, generator=gen)

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=0), "top_k"),
    ],
)
def test_invalid_sampling_arguments_raise(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        sample_next_token(torch.randn(2, 10), **kwargs)
    with pytest.raises(ValueError, match=field):
        tiny_model().generate(random_tokens(1, 3), max_new_tokens=1, **{"temperature": 1.0, **kwargs})


# --- 7. weight tying --------------------------------------------------------------------------


def test_tied_weights_are_one_tensor() -> None:
    model = tiny_model(tie_weights=True)
    assert model.lm_head.weight is model.tok_emb.weight
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names  # counted once
    with torch.no_grad():
        model.tok_emb.weight[0, 0] += 1.0
    assert model.lm_head.weight[0, 0] == model.tok_emb.weight[0, 0]


def test_untied_weights_are_separate() -> None:
    model = tiny_model(tie_weights=False)
    assert model.lm_head.weight is not model.tok_emb.weight
    assert model.lm_head.weight.data_ptr() != model.tok_emb.weight.data_ptr()
    tied = sum(p.numel() for p in tiny_model(tie_weights=True).parameters())
    assert sum(p.numel() for p in model.parameters()) == tied + VOCAB * 16


def test_tying_survives_state_dict_round_trip() -> None:
    source, target = tiny_model(tie_weights=True), tiny_model(tie_weights=True)
    target.load_state_dict(source.state_dict())
    assert target.lm_head.weight is target.tok_emb.weight
    x = random_tokens(1, 5)
    assert_close(target(x).logits, source(x).logits)
