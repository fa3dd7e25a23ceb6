"""Recurrent decoder stacks (the ``rnn``/``elman``/``lstm``/``gru`` presets: recurrent token mixers, no norms,
residuals or channel mixers) at tiny sizes: parity with PyTorch's multi-layer modules, causality, gradients,
config validation, generation with carried state, stateful (TBPTT) training on contiguous streams, and the
rnn/... statistics."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import framework
from framework.data import TextDataModule
from framework.data.stream import ContiguousBatchSampler, contiguous_starts
from framework.mixers.recurrent_activations import SATURATION_THRESHOLD, layer_activations, saturated_share
from framework.nn.attention_stats import record_attention_stats
from framework.stack import StackConfig, StackLM as RNNLM
from plugins.decoder.metrics import decoder_metrics

CELLS = ["elman", "lstm", "gru"]
VOCAB = 24
TORCH_MODULES = {"elman": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


# The rnn preset: a stacked RNN as a decoder stack.
RNN = dict(ffn="none", norm="none", residual=False, position="none")


def rnn_config(cell: str = "lstm", hidden_size: int | None = None, **overrides) -> StackConfig:
    cfg = dict(RNN, mixer=cell, **overrides)
    if hidden_size is not None:
        cfg["rnn"] = {"hidden_size": hidden_size}
    return framework.make_config("decoder", **cfg)


def tiny_model(dtype: torch.dtype = torch.float64, cell: str = "lstm", hidden_size: int | None = 16, **overrides) -> RNNLM:
    cfg = dict(vocab_size=VOCAB, d_model=12, n_layers=2, init_std=0.5)
    cfg.update(overrides)
    return RNNLM(rnn_config(cell, hidden_size, **cfg)).to(dtype).eval()


def cells(model: RNNLM) -> list[nn.RNNBase]:
    return [block.mixer.cell for block in model.blocks]


def run(model: RNNLM, x: torch.Tensor, state=None):  # noqa: ANN001
    """Logits of x from ``state`` (None: a fresh one) and the state after it."""
    state = model.new_state() if state is None else state
    return model(x, state=state), state


def random_tokens(*shape: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, shape)


# --- 1. the model ----------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_matches_pytorch_multilayer_module(cell: str) -> None:
    """Our stack of single-layer fused modules computes exactly what one multi-layer nn.RNN/LSTM/GRU does."""
    model = tiny_model(cell=cell, hidden_size=12, n_layers=3)
    ref = TORCH_MODULES[cell](12, 12, num_layers=3, batch_first=True).double()
    with torch.no_grad():
        for i, layer in enumerate(cells(model)):
            for name, p in layer.named_parameters():
                getattr(ref, name.replace("_l0", f"_l{i}")).copy_(p)
    x = random_tokens(3, 9)
    h, _ = ref(model.tok_emb(x))
    assert_close(model(x).logits, model.lm_head(h))


@pytest.mark.parametrize("tie,hidden", [(True, 12), (True, 16), (False, 16)], ids=["tied", "tied_proj", "untied"])
@pytest.mark.parametrize("cell", CELLS)
def test_causal(cell: str, tie: bool, hidden: int) -> None:
    """Changing tokens after position t leaves logits up to t unchanged and changes the later ones."""
    model = tiny_model(cell=cell, tie_weights=tie, hidden_size=hidden)
    x = random_tokens(2, 8)
    reference = model(x).logits
    for t in range(7):
        y = x.clone()
        y[:, t + 1 :] = (x[:, t + 1 :] + torch.randint(1, VOCAB, y[:, t + 1 :].shape)) % VOCAB
        logits = model(y).logits
        assert_close(logits[:, : t + 1], reference[:, : t + 1])
        assert not torch.allclose(logits[:, t + 1 :], reference[:, t + 1 :])


@pytest.mark.parametrize("tie,hidden", [(True, 12), (True, 16), (False, 16)], ids=["tied", "tied_proj", "untied"])
@pytest.mark.parametrize("cell", CELLS)
def test_weight_tying_and_projection(cell: str, tie: bool, hidden: int) -> None:
    """A recurrent layer of another width than d_model projects back to d_model (the residual stream)."""
    model = tiny_model(cell=cell, tie_weights=tie, hidden_size=hidden)
    assert (model.lm_head.weight is model.tok_emb.weight) == tie
    assert all((block.mixer.out_proj is not None) == (hidden != 12) for block in model.blocks)
    assert model.lm_head.in_features == 12


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_reach_every_parameter_and_the_first_token(cell: str) -> None:
    """A loss on the last position only has finite, non-zero gradients for every parameter, and reaches
    the embedding of the first token through the whole recurrence."""
    model = tiny_model(cell=cell, dropout=0.1).train()
    x = random_tokens(2, 10)
    embedded: list[torch.Tensor] = []

    def keep(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        out.retain_grad()
        embedded.append(out)

    model.tok_emb.register_forward_hook(keep)
    loss = model(x).logits[:, -1].logsumexp(-1).sum()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert embedded[0].grad[:, 0].abs().sum() > 0
    stats = model.grad_stats()
    assert set(stats) == {"grad_norm/embedding", "grad_norm/layer0", "grad_norm/layer1"}
    expected = torch.cat([p.grad.flatten() for p in model.blocks[1].parameters()]).norm()
    assert_close(stats["grad_norm/layer1"], expected)


BAD_CONFIGS = [
    (dict(mixer="transformer"), "mixer.*'lstm'"),
    (dict(mixer="lstm", rnn={"nonlinearity": "relu"}), "rnn.nonlinearity"),
    (dict(dropout=1.0), "dropout"),
    (dict(n_layers=0), "n_layers"),
    (dict(rnn={"hidden_size": 0}), "rnn.hidden_size"),
    (dict(d_model=-4), "d_model"),
    (dict(stateful="yes"), "stateful"),
    (dict(num_layers=2), "unknown field"),
]


@pytest.mark.parametrize("overrides,field", BAD_CONFIGS, ids=[f for _, f in BAD_CONFIGS])
def test_invalid_config_fails_early_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(framework.ConfigError, match=field):
        framework.make_config("decoder", **{**RNN, "mixer": "lstm", **overrides})


def test_presets_pick_their_cell(tmp_path) -> None:
    from hydra_compose import compose_train

    from framework.train import split_model_config

    for cell in CELLS:
        name, values = split_model_config(compose_train([f"model={cell}"], tmp_path))
        assert name == "decoder" and framework.make_config(name, **values).mixer == cell


def test_left_padding_is_refused_right_padding_is_harmless() -> None:
    model = tiny_model()
    x = random_tokens(2, 6)
    right = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    assert_close(model(x, attention_mask=right).logits, model(x).logits)
    with pytest.raises(ValueError, match="right padding only"):
        model(x, attention_mask=torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]))


# --- 2. generation with carried state --------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_stepwise_state_matches_full_forward(cell: str) -> None:
    """Feeding a sequence in chunks (prompt, single tokens, a multi-token chunk) while carrying the state
    gives the one-pass logits at every position."""
    model = tiny_model(cell=cell)
    x = random_tokens(2, 11)
    full = model(x).logits
    state, pieces, start = None, [], 0
    for size in (4, 1, 1, 3, 1, 1):
        out, state = run(model, x[:, start : start + size], state)
        pieces.append(out.logits)
        start += size
    assert_close(torch.cat(pieces, dim=1), full)


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=1.0, top_k=5),
                                      dict(temperature=0.8, top_p=0.9)], ids=["greedy", "top_k", "top_p"])
@pytest.mark.parametrize("cell", CELLS)
def test_generate_with_state_equals_recomputation(cell: str, sampling: dict) -> None:
    """O(1)-per-token generation equals recomputing the whole prefix at every step (same sampler seed),
    also past max_seq_len (a recurrence has no context limit); greedy also equals the obvious loop."""
    model = tiny_model(cell=cell, max_seq_len=8)
    prompt = random_tokens(3, 5)

    def run(use_cache: bool) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        return model.generate(prompt, max_new_tokens=12, use_cache=use_cache, generator=gen, **sampling)

    carried, recomputed = run(True), run(False)
    assert carried.shape == (3, 17) and torch.equal(carried[:, :5], prompt)
    assert torch.equal(carried, recomputed)
    if sampling["temperature"] == 0:
        tokens = prompt
        for _ in range(12):
            tokens = torch.cat([tokens, model(tokens).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        assert torch.equal(carried, tokens)


def test_generate_restores_training_mode() -> None:
    model = tiny_model().train()
    model.generate(random_tokens(1, 3), max_new_tokens=2, temperature=0)
    assert model.training


# --- 3. stateful (truncated-BPTT) training -----------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_stateful_batches_equal_one_pass_over_the_concatenation(cell: str) -> None:
    """stateful=True in training mode: consecutive batches continue from the carried state, so their
    logits equal one pass over the concatenated sequence; the carried state is detached (TBPTT)."""
    model = tiny_model(cell=cell, stateful=True).train()  # dropout 0: training mode is deterministic
    x = random_tokens(3, 12)
    full = run(model, x)[0].logits
    pieces = [model(x[:, s : s + 4]).logits for s in (0, 4, 8)]
    assert_close(torch.cat(pieces, dim=1), full)
    assert all(not t.requires_grad for st in model._carried.layers for t in st.value)
    # A loss on the last batch reaches no earlier batch: its gradient equals that of a fresh forward
    # from the (constant) carried state.
    model.reset_state()
    model(x[:, :4])
    carried = model._carried
    loss = model(x[:, 4:8]).logits.sum()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref = run(model, x[:, 4:8], carried)[0].logits.sum()
    for g, r in zip(grads, torch.autograd.grad(ref, list(model.parameters()))):
        assert_close(g, r)


def test_state_resets_per_batch_when_not_stateful_in_eval_and_on_request() -> None:
    x = random_tokens(2, 8)

    def seeded(**overrides) -> RNNLM:
        torch.manual_seed(1)  # the same weights every time
        return tiny_model(**overrides)

    fresh = run(seeded(), x[:, 4:])[0].logits
    stateless = seeded(stateful=False).train()
    stateless(x[:, :4])
    assert_close(stateless(x[:, 4:]).logits, fresh)
    stateful = seeded(stateful=True).train()
    stateful(x[:, :4])
    assert not torch.allclose(stateful(x[:, 4:]).logits, fresh)  # carried
    stateful.reset_state()
    assert_close(stateful(x[:, 4:]).logits, fresh)
    stateful(x[:, :4])
    assert_close(stateful(x[:1, 4:]).logits, fresh[:1])  # batch size changed: fresh start
    stateful.eval()(x[:, :4])
    stateful.eval()
    stateful.reset_state()
    stateful(x[:, :4])
    assert stateful._carried is None  # evaluation never carries or updates the training state


def test_contiguous_layout() -> None:
    starts = contiguous_starts(n_tokens=103, seq_len=4, batch_size=3)  # streams of 34 tokens, 8 windows each
    assert starts.shape == (3, 8)
    assert starts[:, 0].tolist() == [0, 34, 68] and starts[0, 1] == 4
    assert int(starts.max()) + 4 + 1 <= 103
    batches = list(ContiguousBatchSampler(3, 8))
    assert len(batches) == 8 and batches[1] == [1, 9, 17]
    with pytest.raises(ValueError, match="too short"):
        contiguous_starts(n_tokens=20, seq_len=8, batch_size=3)


@pytest.fixture()
def corpus(tmp_path) -> str:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(chr(97 + (i * 7 + i // 13) % 26) for i in range(3000)))
    return str(path)


def test_text_datamodule_contiguous_order_continues_rows(corpus: str) -> None:
    dm = TextDataModule(source="text", paths=[corpus], seq_len=16, batch_size=4, order="contiguous")
    batches = list(dm.train_dataloader())
    assert len(batches) == (2700 // 4 - 1) // 16
    for prev, nxt in zip(batches, batches[1:]):
        # Row i's next window starts with the token row i's labels ended on.
        assert torch.equal(nxt["input_ids"][:, 0], prev["labels"][:, -1])
    streams = torch.cat([b["input_ids"] for b in batches], dim=1)  # (B, N * T): each row one contiguous stream
    assert torch.equal(streams[:, 1:], torch.cat([b["labels"] for b in batches], dim=1)[:, :-1])


def test_stateful_training_on_the_contiguous_loader_equals_one_pass(corpus: str) -> None:
    """End to end: a stateful LSTM fed the loader's batches in order gives, per row, the logits of one
    pass over that row's whole stream."""
    dm = TextDataModule(source="text", paths=[corpus], seq_len=8, batch_size=3, order="contiguous")
    batches = list(dm.train_dataloader())[:5]
    model = RNNLM(rnn_config(vocab_size=256, d_model=8, n_layers=2, stateful=True)).double().train()
    stepped = torch.cat([model(b["input_ids"]).logits for b in batches], dim=1)
    one_pass = run(model, torch.cat([b["input_ids"] for b in batches], dim=1))[0].logits
    assert_close(stepped, one_pass)


def test_contiguous_order_config_errors(corpus: str) -> None:
    from framework.data import DataConfigError

    with pytest.raises(DataConfigError, match="order"):
        TextDataModule(source="text", paths=[corpus], seq_len=16, batch_size=4, order="random")
    with pytest.raises(DataConfigError, match="order='contiguous'"):
        TextDataModule(source="text", paths=[corpus], seq_len=103, batch_size=26, order="contiguous")


# --- 4. statistics -----------------------------------------------------------------------------


def test_saturated_share_equals_a_count_for_fixed_activations() -> None:
    acts = {
        "tanh": torch.tensor([[-1.0, -0.995, -0.5], [0.0, 0.99, 0.9901]]),  # 3 of 6 beyond 0.99
        "sigmoid": torch.tensor([0.999, 0.5, 0.01, 0.995]),  # 2 of 4
    }
    count = sum(int((a.abs() > SATURATION_THRESHOLD).sum()) for a in acts.values())
    assert count == 5
    assert saturated_share(acts).item() == pytest.approx(5 / 10)
    assert saturated_share({}) is None


def reference_activations(cell: str, layer: nn.RNNBase, x: torch.Tensor) -> list[torch.Tensor]:
    """The cell's tanh/sigmoid activations, step by step from the textbook equations (zero initial state)."""
    w_ih, w_hh, b_ih, b_hh = layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0
    b, t_len, hidden = x.shape[0], x.shape[1], layer.hidden_size
    h, c = x.new_zeros(b, hidden), x.new_zeros(b, hidden)
    acts = []
    for t in range(t_len):
        gi, gh = x[:, t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        if cell == "elman":
            h = torch.tanh(gi + gh)
            acts += [h]
        elif cell == "gru":
            r = torch.sigmoid(gi[:, :hidden] + gh[:, :hidden])
            z = torch.sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden : 2 * hidden])
            n = torch.tanh(gi[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
            h = (1 - z) * n + z * h
            acts += [r, z, n]
        else:
            i, f, g, o = (gi + gh).chunk(4, dim=-1)
            i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
            c = f * c + i * g
            h = o * c.tanh()
            acts += [i, f, g, o, c.tanh()]
    return acts


@pytest.mark.parametrize("cell", CELLS)
def test_saturation_stat_equals_a_count_over_the_reference_activations(cell: str) -> None:
    """With large weights many units saturate; the model's per-layer share (recorded on validation
    batches) equals the share counted here over activations computed step by step."""
    model = tiny_model(cell=cell, n_layers=1, d_model=8, hidden_size=8, init_std=2.0)
    with torch.no_grad():
        for p in cells(model)[0].parameters():
            p.normal_(0, 1.5)
    x = random_tokens(3, 10)
    assert "rnn_saturation" not in model(x).stats  # off unless recording (training pays nothing)
    record_attention_stats(model, True)
    share = model(x).stats["rnn_saturation"]
    acts = reference_activations(cell, cells(model)[0], model.tok_emb(x))
    count = sum(int((a.abs() > 0.99).sum()) for a in acts)
    total = sum(a.numel() for a in acts)
    assert 0 < count < total
    assert share.shape == (1,) and share.item() == pytest.approx(count / total)


@pytest.mark.parametrize("cell", CELLS)
def test_recomputed_gates_reproduce_the_fused_outputs(cell: str) -> None:
    """The parallel gate recomputation is consistent with the fused kernel from a non-zero state."""
    layer = TORCH_MODULES[cell](5, 7, batch_first=True).double()
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    h0 = torch.randn(1, 2, 7, dtype=torch.float64)
    c0 = torch.randn(1, 2, 7, dtype=torch.float64)
    h, _ = layer(x, (h0, c0) if cell == "lstm" else h0)
    acts = layer_activations(layer, x, h, h0[0], c0[0] if cell == "lstm" else None)
    if cell == "lstm":
        assert_close(acts["o"] * acts["tanh_c"], h)
    elif cell == "gru":
        h_prev = torch.cat([h0[0][:, None], h[:, :-1]], dim=1)
        assert_close((1 - acts["z"]) * acts["n"] + acts["z"] * h_prev, h)
    else:
        assert set(acts) == {"h"}
    assert layer_activations(nn.RNN(5, 7, nonlinearity="relu", batch_first=True).double(), x, h, h0[0]) == {}


def test_hidden_norm_stats_and_metrics() -> None:
    model = tiny_model(cell="gru", n_layers=2, hidden_size=None)
    x = random_tokens(2, 8)
    stats = model(x).stats
    layer0, layer1 = cells(model)
    h0 = layer0(model.tok_emb(x))[0]
    h1 = layer1(h0)[0]
    assert_close(stats["rnn_hidden_norm"], torch.stack([h0.norm(dim=-1).mean(), h1.norm(dim=-1).mean()]).float())
    quarters = torch.stack([h.norm(dim=-1).reshape(2, 4, 2).mean((0, 2)) for h in (h0, h1)])  # (layers, quarters)
    assert_close(stats["rnn_hidden_norm_by_time"], quarters.float())
    record_attention_stats(model, True)
    metrics = decoder_metrics(model.config)
    for m in metrics.values():
        m.update(model(x).stats)
    values = {name: m.compute() for name, m in metrics.items()}
    assert set(values["rnn/hidden_norm"]) == {"layer0", "layer1", "mean"}
    assert set(values["rnn/hidden_norm_by_time"]) == {"t0", "t1", "t2", "t3", "mean"}
    assert_close(values["rnn/hidden_norm_by_time"]["t0"], quarters[:, 0].mean().float())
    assert set(values["rnn/saturation"]) == {"layer0", "layer1", "mean"}


def test_training_loop_resets_the_carried_state_at_epoch_start() -> None:
    from framework.lit_module import ArchitectureModule

    module = ArchitectureModule("decoder", dict(RNN, mixer="lstm", vocab_size=VOCAB, d_model=8, n_layers=1, stateful=True))
    module.model.train()(random_tokens(2, 4))
    assert module.model._carried is not None
    module.on_train_epoch_start()
    assert module.model._carried is None


def test_training_run_logs_rnn_metrics(tmp_path, corpus: str) -> None:
    """A few stateful steps (over several short epochs) through the real train(): rnn/... metrics and
    per-layer gradient norms (grad_norm/..., any stack) are logged."""
    from hydra_compose import FAST, compose_train

    from framework.train import train

    cfg = compose_train(["model=lstm", "data=text", f"data.paths=[{corpus}]", "data.order=contiguous",
                         "data.seq_len=16", "data.max_bytes=200", "model.d_model=16", "model.n_layers=2",
                         "model.stateful=true", *FAST, "callbacks=none"], tmp_path)
    result = train(cfg)
    metrics = result["metrics"]
    for key in ("grad_norm/layer0", "grad_norm/layer1", "grad_norm/embedding",
                "rnn/hidden_norm/layer1", "rnn/saturation/mean", "rnn/hidden_norm_by_time/t3"):
        assert key in metrics and torch.isfinite(torch.tensor(metrics[key])), key


# --- 5. learning -------------------------------------------------------------------------------


@pytest.mark.slow
def test_lstm_learns_short_copy(tmp_path) -> None:
    """lstm on synthetic/copy of 5 symbols (10 possible) reaches >= 95% answer accuracy (~15 s on a CPU)."""
    from hydra_compose import compose_train

    from framework.train import train

    cfg = compose_train([
        "model=lstm", "data=synthetic", "data.task=copy", "data.length=5", "data.seq_len=10", "data.vocab_size=12",
        "data.n_train=4000", "data.n_val=256", "data.batch_size=32",
        "model.d_model=32", "model.rnn.hidden_size=128", "model.n_layers=1",
        "optimizer.lr=3e-3", "optimizer.weight_decay=0.0", "trainer.max_steps=600", "trainer.val_check_interval=200",
        "trainer.enable_progress_bar=false", "logger=csv", "callbacks=none", "sample.prompt=null",
    ], tmp_path)
    metrics = train(cfg)["metrics"]
    assert metrics["val/acc"] >= 0.95, metrics
