"""The composable decoder stack: the contract kit over every token mixer x every channel mixer and the
hybrid presets (causality, padding, gradient flow, cached generation == recomputation, mixed caches),
presets equal to the models they replaced (golden losses), layer patterns, and bad input."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import framework
from framework.config_schema import ConfigError
from framework.mixers import list_mixers
from framework.mixers.recurrent import RecurrentState
from framework.nn.kv_cache import KVCache
from framework.registry import get_plugin, make_config
from framework.testing.kit import build_subject, run_check
from framework.train import split_model_config
from hydra_compose import compose_train
from mqar_check import mqar_accuracy

TOKEN_MIXERS = sorted(list_mixers("token"))
CHANNEL_MIXERS = sorted(list_mixers("channel"))
# Patterns small enough for the kit's 16-token sequences to cross several windows, blocks and chunks.
SMALL_SPARSE = {"window": 4, "block_size": 4, "n_global": 2, "n_random": 1, "stride": 4, "n_summary": 1,
                "n_buckets": 4, "chunk_size": 4}
SMALL_MOE = {"n_experts": 4, "top_k": 2}
CHECKS = ("causality", "padding_invariance", "gradient_flow", "generate")
HYBRIDS = ("local_global", "attn_lstm", "longformer_moe")


def grid_overrides(token: str, channel: str, layers: list[str] | None = None) -> dict:
    specs = {s.options for s in (list_mixers()[n] for n in [token, channel, *(layers or [])])}
    out: dict = {"mixer": token, "ffn": channel, "layers": layers, "position": "rope"}
    if "sparse" in specs:
        out["sparse"] = SMALL_SPARSE
    if "moe" in specs:
        out["moe"] = SMALL_MOE
    return out


def assert_checks(subject, checks=CHECKS) -> None:  # noqa: ANN001
    results = [run_check(subject, c) for c in checks]
    failed = [f"{r.check}: {r.message}" for r in results if r.status == "failed"]
    assert not failed, failed
    assert all(r.status == "passed" for r in results), [(r.check, r.status, r.message) for r in results]


def checks_for(token: str) -> tuple[str, ...]:
    # Reformer's chunks are formed by sorting every position's hash, so a later (or padded) token can change
    # which earlier keys share an earlier query's chunk: its mask keeps each attended key causal and real
    # (tests/test_sparse_lsh.py), not the chunk membership. Known and documented, as in the paper.
    return tuple(c for c in CHECKS if not (token == "lsh" and c in ("causality", "padding_invariance")))


@pytest.mark.parametrize("channel", CHANNEL_MIXERS)
@pytest.mark.parametrize("token", TOKEN_MIXERS)
def test_every_token_mixer_with_every_channel_mixer_honours_the_contract(token: str, channel: str) -> None:
    subject = build_subject("decoder", "gpt", grid_overrides(token, channel))
    assert subject.compose_error is None
    assert_checks(subject, checks_for(token))


@pytest.mark.parametrize("token", [t for t in TOKEN_MIXERS if t != "attention"])
def test_mixed_stacks_with_attention_honour_the_contract(token: str) -> None:
    """[token, attention] layers: one generation carries a KV cache and the other layer's own state side by side."""
    subject = build_subject("decoder", "gpt", grid_overrides(token, "swiglu", layers=[token, "attention"]))
    assert_checks(subject, checks_for(token))


@pytest.mark.parametrize("preset", HYBRIDS)
def test_hybrid_presets_honour_the_contract(preset: str) -> None:
    overrides = {"n_layers": 4 if preset != "local_global" else 6}
    if preset != "attn_lstm":
        overrides["sparse"] = {"window": 4, "block_size": 4, "n_global": 2}
    assert_checks(build_subject("decoder", preset, overrides))


def test_hybrid_decode_state_mixes_kv_caches_and_recurrent_states() -> None:
    model = framework.build_model("decoder", vocab_size=32, d_model=16, n_heads=2, n_layers=4, max_seq_len=32,
                                  layers=["lstm", "lstm", "lstm", "attention"], position="rope").eval()
    state = model.new_state()
    assert [type(s) for s in state.layers] == [RecurrentState] * 3 + [KVCache]
    x = torch.randint(0, 32, (2, 9))
    full = model(x).logits
    steps = [model(x[:, :5], state=state).logits] + [model(x[:, i : i + 1], state=state).logits for i in range(5, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), full)
    assert state.length == 9 and state.layers[3].length == 9
    assert state.layers[0].value[0].shape == (1, 2, 16)  # O(1): (h, c), whatever the length


# ---- presets equal the models they replaced ------------------------------------------------------

# Initial loss and loss after 20 AdamW steps (fp64), recorded on main before the composable stack
# (commit f163c32, with plugins gpt, moe, sparse, rnn), by the same procedure as golden_losses().
GOLDEN = {
    "gpt": (4.185969196326341, 2.5685733538386795),
    "llama": (4.177763863272294, 2.3322016164860724),
    "mixtral": (4.185524202640077, 2.609265795569168),
    "switch": (4.167215751621795, 2.7035843869524196),
    "longformer": (4.186554526431563, 2.5679038610376965),
    "lstm": (4.161375203815922, 3.8644367303867875),
}
GOLDEN_OVERRIDES = {
    "gpt": ["model.n_heads=4"], "llama": ["model.n_heads=4"],
    "mixtral": ["model.n_heads=4", "model.moe.n_experts=4"], "switch": ["model.n_heads=4", "model.moe.n_experts=4"],
    "longformer": ["model.n_heads=4", "model.sparse.window=8", "model.sparse.n_global=2", "model.sparse.block_size=8"],
    "lstm": [],
}


def golden_losses(preset: str) -> tuple[float, float]:
    cfg = compose_train([f"model={preset}", *GOLDEN_OVERRIDES[preset], "model.vocab_size=64", "model.max_seq_len=32",
                         "model.d_model=32", "model.n_layers=2"])
    name, values = split_model_config(cfg)
    torch.manual_seed(1234)
    model = get_plugin(name).build(make_config(name, **values)).double()
    x = torch.randint(0, 64, (4, 33), generator=torch.Generator().manual_seed(99))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(21):
        out = model(x[:, :-1])
        loss = F.cross_entropy(out.logits.reshape(-1, 64), x[:, 1:].reshape(-1))
        losses.append(loss.item())
        opt.zero_grad()
        (loss + out.aux_loss).backward()
        opt.step()
    return losses[0], losses[20]


@pytest.mark.parametrize("preset", list(GOLDEN))
def test_presets_equal_their_old_selves(preset: str) -> None:
    first, after_20 = golden_losses(preset)
    assert first == pytest.approx(GOLDEN[preset][0], rel=1e-9, abs=1e-9)
    assert after_20 == pytest.approx(GOLDEN[preset][1], rel=1e-7, abs=1e-7)


# ---- layer patterns -----------------------------------------------------------------------------


def names(cfg) -> tuple[list[str], list[str]]:  # noqa: ANN001
    return [s.name for s in cfg.token_mixers], [s.name for s in cfg.channel_mixers]


def test_a_short_list_repeats_to_n_layers_and_periodic_shorthands_place_mixers() -> None:
    cfg = make_config("decoder", n_layers=8, layers=["attention", "lstm"])
    assert names(cfg)[0] == ["attention", "lstm"] * 4
    # Jamba's description: attention every 8th layer at offset 4, MoE every 2nd layer at offset 1.
    cfg = make_config("decoder", n_layers=8, mixer="lstm", mixer_every={"name": "attention", "every": 8, "offset": 4},
                      ffn="swiglu", ffn_every={"name": "moe", "every": 2, "offset": 1})
    tokens, channels = names(cfg)
    assert tokens == ["lstm"] * 4 + ["attention"] + ["lstm"] * 3
    assert channels == ["swiglu", "moe"] * 4


def test_the_issue_command_line_builds_an_attention_lstm_stack() -> None:
    cfg = compose_train(["model=gpt", "model.layers=[attention,lstm]", "model.n_layers=2"])
    name, values = split_model_config(cfg)
    model = get_plugin(name).build(make_config(name, **values))
    assert [type(b.mixer).__name__ for b in model.blocks] == ["SelfAttention", "RecurrentMixer"]


# ---- bad input: a clear error before anything is built ------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"mixer": "mamba9"}, r"mixer: unknown token mixer 'mamba9'; known token mixers: 'attention', .*'lstm'"),
    ({"layers": ["attention", "lstmm"]}, r"layers\[1\]: unknown token mixer 'lstmm'"),
    ({"layers": ["mlp"]}, r"layers\[0\]: unknown token mixer 'mlp' \(it is a channel mixer\)"),
    ({"ffn": "lstm"}, r"ffn: unknown channel mixer 'lstm' \(it is a token mixer\)"),
    ({"n_layers": 4, "layers": ["attention", "lstm", "lstm"]}, r"layers: a list of 3 mixers .* must divide it .*1, 2, 4"),
    ({"layers": []}, r"layers: must name at least one mixer"),
    ({"moe": {"n_experts": 4}}, r"moe: options are set but no layer uses a mixer configured by 'moe'"),
    ({"sparse": {"window": 8}}, r"sparse: options are set but no layer uses"),
    ({"rnn": {"hidden_size": 8}}, r"rnn: options are set but no layer uses"),
    ({"mixer": "lstm", "rnn": {"nonlinearity": "relu"}}, r"rnn.nonlinearity: only applies to elman"),
    ({"stateful": True}, r"stateful: .*every token mixer must be recurrent .*'attention'"),
    ({"layers": ["attention"], "mixer_every": {"name": "lstm", "every": 2}}, r"set either layers .* or mixer_every"),
    ({"mixer_every": {"every": 2}}, r"every=2 needs the mixer to place"),
    ({"mixer_options": {"mamba": {}}}, r"mixer_options.mamba: no layer uses mixer 'mamba'"),
])
def test_bad_stack_configs_fail_early_naming_the_field(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config("decoder", **overrides)


def test_a_mixer_that_cannot_be_causal_is_refused(monkeypatch) -> None:
    import dataclasses

    from framework.mixers import registry

    found = registry.discover_mixers()
    bidirectional = dataclasses.replace(found.mixers["attention"], name="bidir", causal=False)
    patched = registry.MixerDiscovery({**found.mixers, "bidir": bidirectional}, found.errors)
    monkeypatch.setattr(registry, "discover_mixers", lambda: patched)
    with pytest.raises(ConfigError, match=r"mixer: 'bidir' cannot be causal"):
        make_config("decoder", layers=["attention", "bidir"])


def test_a_broken_third_party_mixer_is_named(monkeypatch) -> None:
    from framework.mixers import registry

    found = registry.discover_mixers()
    patched = registry.MixerDiscovery(found.mixers, {**found.errors, "hyena": "failed to import x:Y: ImportError"})
    monkeypatch.setattr(registry, "discover_mixers", lambda: patched)
    with pytest.raises(ConfigError, match=r"mixer: mixer 'hyena' is installed but broken: failed to import"):
        make_config("decoder", mixer="hyena")


# ---- fusion changes what a model can do -------------------------------------------------------------


def _mqar_accuracy(layers: list[str], steps: int = 800, t: int = 32) -> float:
    """A stack with the attn_lstm preset's settings (RoPE, RMSNorm, SwiGLU, width 64) and the given layers,
    trained on MQAR with weight decay 0.1, warm-up and cosine (Zoology's recipe)."""
    overrides = ["model.vocab_size=64", f"model.max_seq_len={t}", "model.d_model=64", "model.n_heads=2",
                 f"model.n_layers={len(layers)}", f"model.layers=[{','.join(layers)}]"]
    name, values = split_model_config(compose_train(["model=attn_lstm", *overrides]))
    torch.manual_seed(0)
    model = get_plugin(name).build(make_config(name, **values))
    return mqar_accuracy(model, steps, t=t, weight_decay=0.1, warmup_cosine=True)


@pytest.mark.slow
def test_attention_lstm_hybrid_beats_the_pure_lstm_on_mqar() -> None:
    """MQAR (T=32, 4 key-value pairs, 64 symbols), 800 steps: an LSTM layer then an attention layer recalls
    nearly every value; two LSTM layers of the same width stay near the ~0.27 they get from guessing among
    the context's values (measured: 1.0 vs 0.28 for seeds 0 and 1; the hybrid jumps from ~0.25 to 1.0 between
    steps 250 and 800, the LSTM reaches 0.30 at 1500)."""
    hybrid = _mqar_accuracy(["lstm", "attention"])
    lstm = _mqar_accuracy(["lstm", "lstm"])
    assert hybrid >= 0.9, (hybrid, lstm)
    assert hybrid > lstm + 0.4, (hybrid, lstm)


def test_a_recurrent_stack_needs_no_head_divisibility() -> None:
    """n_heads only shapes attention layers: a pure LSTM stack may have any width."""
    assert make_config("decoder", mixer="lstm", d_model=30).d_model == 30
    with pytest.raises(ConfigError, match="d_model .30. must be divisible by n_heads"):
        make_config("decoder", layers=["lstm", "attention"], n_layers=2, d_model=30)


# ---- one key scheme for every architecture ---------------------------------------------------------


def _shared_keys(preset: str, tmp_path, monkeypatch, *extra: str) -> set[str]:  # noqa: ANN001
    """The shared-statistic keys (attn/..., resid/...) in the W&B record of a short run of ``preset``."""
    from framework.train import train
    from framework.wandb_records import read_runs
    from hydra_compose import FAST

    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / preset
    cfg = compose_train([*FAST, f"model={preset}", "logger=wandb", "callbacks=none", "sample.prompt=null",
                         "data=synthetic", "model.d_model=32", "model.n_heads=2", "model.n_layers=4", *extra], out)
    train(cfg)
    (run,) = read_runs(out, wait_s=20)
    figures = set(run.media_keys())  # attn/pattern: the picture of a sparse pattern
    return {k for k in run.keys() if k.split("/")[0] in ("attn", "resid") and k not in figures}


def test_gpt_sparse_and_hybrid_runs_log_the_same_shared_keys(tmp_path, monkeypatch) -> None:
    """One W&B panel compares every run of a sweep: gpt, a sparse preset and hybrids log their attention and
    residual statistics under the same keys (per layer where the layer has attention, and the mean)."""
    small_window = ["model.sparse.window=8", "model.sparse.block_size=8", "model.sparse.n_global=2"]
    gpt = _shared_keys("gpt", tmp_path, monkeypatch)
    longformer = _shared_keys("longformer", tmp_path, monkeypatch, *small_window)
    local_global = _shared_keys("local_global", tmp_path, monkeypatch, "model.mixer_every.every=4",
                                "model.mixer_every.offset=3", "model.sparse.window=8", "model.sparse.block_size=8")
    attn_lstm = _shared_keys("attn_lstm", tmp_path, monkeypatch)
    per_layer = {f"{k}/layer{i}" for k in ("attn/entropy", "attn/topk_mass", "attn/density", "resid/rms") for i in range(4)}
    means = {f"{k}/mean" for k in ("attn/entropy", "attn/topk_mass", "attn/density", "resid/rms")}
    assert gpt == per_layer | means
    assert local_global == gpt  # sliding-window and global layers report alike
    assert longformer == gpt | {"attn/receptive_field"}  # static sparse patterns everywhere: their reach too
    # Three LSTM layers, then attention: attention statistics exist for layer 3 only, under the same keys.
    assert attn_lstm == means | {f"resid/rms/layer{i}" for i in range(4)} | {
        f"{k}/layer3" for k in ("attn/entropy", "attn/topk_mass", "attn/density")}
