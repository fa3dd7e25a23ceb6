"""Quantization (framework/quantization, torchao): every method on a tiny model of every plugin, QAT prepare /
convert / resume, and `archlab quantize` / `archlab eval` / `archlab generate` on quantized checkpoints.

Properties: quantized logits close to fp32 (a tolerance per method); the weight-only forward equals the fp32
forward with the dequantized weights (the quantized tensors are what runs); dynamic methods really quantize
activations; quantized weights are torchao quantized tensors and take the bytes their format says; QAT's fake
quantization changes outputs by the quantization error with gradients flowing, and its convert equals PTQ of the
trained weights.
"""
from __future__ import annotations

import copy
import functools
import json

import pytest
import torch
from torch import nn

from framework.config_schema import ConfigError
from framework.nn.moe.experts import GroupedExperts
from framework.quantization import QuantizationConfig, convert_qat, plan, prepare_qat, quantize_model
from framework.quantization.int8pack import Int8PackedLinear
from framework.quantization.torchao_backend import is_quantized, storage_bytes, torchao
from framework.registry import get_plugin, make_config
from framework.train import split_model_config
from hydra_compose import FAST, compose_train

torchao()  # once, before the tests time anything

SEQ2SEQ = ("t5", "transformer", "rnn_seq2seq")
PRESETS = ("gpt", "llama", "mixtral", "deepseek", "mamba", "mamba2", "griffin", "qwen3_next", "lstm",
           "longformer", "bert", *SEQ2SEQ)
METHODS = {  # method -> (config, relative logit error allowed against fp32)
    "int8_weight_only": (dict(method="int8_weight_only"), 0.03),
    "int8_pack": (dict(method="int8_weight_only", int8_kernel="int8pack"), 0.03),
    "int8_dynamic": (dict(method="int8_dynamic"), 0.05),
    "int4_weight_only": (dict(method="int4_weight_only"), 0.25),
    "int4_packed": (dict(method="int4_weight_only", int4_format="packed"), 0.25),
    "int8_dynamic_int4_weight": (dict(method="int8_dynamic_int4_weight"), 0.25),
}
VOCAB = 96  # not d_model: the output head must be told apart by more than its shape


def build(name: str) -> nn.Module:
    """A fresh copy of the tiny ``name`` model (composed once: Hydra's compose costs more than the test)."""
    return copy.deepcopy(_built(name))


@functools.cache
def _built(name: str) -> nn.Module:
    overrides = [f"model={name}", f"model.vocab_size={VOCAB}", "model.d_model=64"]
    if name not in ("lstm", "rnn_seq2seq"):
        overrides.append("model.n_heads=4")
    if name in SEQ2SEQ:
        overrides.append("data=seq2seq")
    plugin, values = split_model_config(compose_train(overrides))
    torch.manual_seed(0)
    return get_plugin(plugin).build(make_config(plugin, **values)).eval()


def logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if getattr(model, "is_encoder_decoder", False):
            return model(input_ids=ids, decoder_input_ids=ids).logits
        return model(ids).logits


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def weights_of(module: nn.Module) -> list[torch.Tensor]:
    if isinstance(module, GroupedExperts):
        return [w for w, _ in module.projections()]
    if isinstance(module, Int8PackedLinear):
        return [module.qweight]
    return [module.weight]


def format_bytes(weight_shape: tuple[int, ...], cfg: QuantizationConfig, packed: bool) -> int:
    """What a weight of this shape must take in the method's storage format: int8 = one byte a weight + per output row an
    fp32 scale and an int8 zero point (0: symmetric); int4 unpacked = one int8 a weight + per group an fp32 scale and an int8 zero point;
    int4 packed = half a byte a weight + per group an fp32 scale and an fp32 zero point."""
    k = weight_shape[-1]
    rows = int(torch.tensor(weight_shape[:-1]).prod())
    if cfg.spec.weight_bits == 8:
        return rows * k + rows * 5
    groups = rows * (k // cfg.group_size)
    return rows * k // 2 + groups * 8 if packed else rows * k + groups * 5


# rnn_seq2seq at this size has no Linear with out_features a multiple of 16 (packed int4's tile) outside its cells
CASES = [(n, m) for n in PRESETS for m in METHODS if (n, m) != ("rnn_seq2seq", "int4_packed")]


@pytest.mark.parametrize("name, method", CASES)
def test_every_method_on_every_plugin(name: str, method: str) -> None:
    values, tolerance = METHODS[method]
    # mamba's dt_proj has in_features dt_rank = 4; an LSTM stack's only matmuls besides its cells are the
    # embedding and the head
    cfg = QuantizationConfig(**values, skip_indivisible=True, include_embeddings=name == "lstm")
    model = build(name)
    ids = torch.randint(0, VOCAB, (2, 16))
    reference = logits(model, ids)
    report = quantize_model(model, cfg)
    out = logits(model, ids)
    quantized = [d for d in report.decisions if d.quantize]
    assert quantized, report.kept
    assert torch.isfinite(out).all()
    error = relative_error(out, reference)
    assert 0 < error < tolerance, (name, method, error)
    for d in quantized:
        module = model.get_submodule(d.name)
        if isinstance(module, Int8PackedLinear):  # int8 data and a bf16 scale per row
            assert module.qweight.dtype == torch.int8 and cfg.int8_kernel == "int8pack"
            rows, k = module.qweight.shape
            assert storage_bytes(module.qweight) + storage_bytes(module.scales) == rows * k + rows * 2
            continue
        for weight in weights_of(module):
            assert is_quantized(weight), d.name
            packed = cfg.int4_format == "packed" and d.kind in ("linear", "head")  # experts, embeddings: always unpacked
            expected = format_bytes(tuple(weight.shape), cfg, packed)
            assert storage_bytes(weight) == expected, (d.name, storage_bytes(weight), expected)
    assert all(reason for reason in report.kept.values())
    # the layers' matmul weights: the quantized ones in their format, the kept ones (router, skipped) in fp32
    def quantized_bytes(d, w) -> int:  # noqa: ANN001
        if isinstance(model.get_submodule(d.name), Int8PackedLinear):
            return w.numel() + w.shape[0] * 2
        return format_bytes(tuple(w.shape), cfg, cfg.int4_format == "packed" and d.kind in ("linear", "head"))

    expected = sum(quantized_bytes(d, w) if d.quantize else w.numel() * 4
                   for d in report.decisions if d.kind in ("linear", "experts")
                   for w in weights_of(model.get_submodule(d.name)))
    assert report.linear_bytes_after == expected
    assert report.linear_bytes_before == sum(d_numel * 4 for d_numel in (
        int(torch.tensor(w.shape).prod()) for d in report.decisions if d.kind in ("linear", "experts")
        for w in weights_of(model.get_submodule(d.name))))


CAUSAL = [n for n in PRESETS if n not in SEQ2SEQ and n != "bert"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", CAUSAL)
def test_quantized_models_decode_with_their_cache_as_they_recompute(name: str, method: str) -> None:
    """Greedy generation through the decode state == argmax of the full forward, for the quantized model: the
    decode paths that read weights themselves (MLA's absorbed cache reads kv_b_proj, packed int4 has no
    dequantize) must work on every format."""
    cfg = QuantizationConfig(**METHODS[method][0], skip_indivisible=True, include_embeddings=name == "lstm")
    model = build(name)
    quantize_model(model, cfg)
    prompt = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.generate(prompt, 5, temperature=0)
        recomputed = model(out[:, :-1]).logits.argmax(-1)[:, prompt.shape[1] - 1:]
    assert torch.equal(out[:, prompt.shape[1]:], recomputed), (name, method)


@pytest.mark.parametrize("name", ["gpt", "mixtral", "deepseek", "mamba2", "qwen3_next", "t5"])
@pytest.mark.parametrize("method", ["int8_weight_only", "int4_weight_only"])
def test_weight_only_forward_is_the_fp32_forward_with_the_dequantized_weights(name: str, method: str) -> None:
    """The quantized tensors are what the forward reads: replacing each by its dequantized value in the fp32
    model gives the same logits."""
    cfg = QuantizationConfig(method=method, skip_indivisible=True)
    model = build(name)
    fp32 = copy.deepcopy(model)
    quantize_model(model, cfg)
    with torch.no_grad():
        for (key, q), (_, p) in zip(model.named_parameters(), fp32.named_parameters()):
            if is_quantized(q):
                p.copy_(q.dequantize())
    ids = torch.randint(0, VOCAB, (2, 16))
    torch.testing.assert_close(logits(model, ids), logits(fp32, ids), rtol=1e-4, atol=1e-4)


def test_dynamic_methods_quantize_the_activations_too() -> None:
    ids = torch.randint(0, VOCAB, (2, 16))
    outs = {}
    for method in ("int8_weight_only", "int8_dynamic"):
        model = build("llama")
        quantize_model(model, QuantizationConfig(method=method))
        outs[method] = logits(model, ids)
    # same int8 weights; only activation quantization differs
    assert relative_error(outs["int8_dynamic"], outs["int8_weight_only"]) > 1e-4


def test_embeddings_and_head_only_with_include_embeddings() -> None:
    model = build("gpt")
    ids = torch.randint(0, VOCAB, (2, 16))
    reference = logits(model, ids)
    default = plan(model, QuantizationConfig(method="int8_weight_only"))
    kinds = {d.name: d for d in default}
    assert not kinds["tok_emb"].quantize and not kinds["lm_head"].quantize
    assert "tied" in kinds["lm_head"].reason
    report = quantize_model(model, QuantizationConfig(method="int8_weight_only", include_embeddings=True))
    assert is_quantized(model.tok_emb.weight) and is_quantized(model.lm_head.weight)
    assert report.model_bytes_after < 0.30 * report.model_bytes_before
    assert relative_error(logits(model, ids), reference) < 0.03


def test_routers_and_recurrent_cells_are_reported_in_full_precision() -> None:
    moe = plan(build("mixtral"), QuantizationConfig(method="int8_weight_only"))
    router = [d for d in moe if d.name.endswith("router.weight")]
    assert router and not any(d.quantize for d in router) and "router" in router[0].reason
    assert any(d.kind == "experts" and d.quantize for d in moe)
    lstm = plan(build("lstm"), QuantizationConfig(method="int8_weight_only"))
    cells = [d for d in lstm if d.kind == "recurrent"]
    assert cells and not any(d.quantize for d in cells) and "LSTM" in cells[0].reason


def test_a_group_size_not_dividing_a_layer_names_the_layer_and_the_size() -> None:
    with pytest.raises(ConfigError, match=r"group_size: 128 .*blocks\.0\.mixer\.q_proj \(in_features 64\)"):
        plan(build("gpt"), QuantizationConfig(method="int4_weight_only", group_size=128))
    with pytest.raises(ConfigError, match=r"dt_proj \(in_features 4\).*skip_indivisible"):
        plan(build("mamba"), QuantizationConfig(method="int4_weight_only"))
    with pytest.raises(ConfigError, match=r"int8_kernel: 'int8pack' does not fit .*dt_proj \(in_features 4\)"):
        plan(build("mamba"), QuantizationConfig(method="int8_weight_only", int8_kernel="int8pack"))
    kept = plan(build("mamba"), QuantizationConfig(method="int4_weight_only", skip_indivisible=True))
    assert any("dt_proj" in d.name and not d.quantize and "in_features 4" in d.reason for d in kept)


def test_bad_methods_and_options_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="quantization.method: 'int3' is not one of none, int8_weight_only"):
        QuantizationConfig(method="int3")
    with pytest.raises(ConfigError, match="archlab train quantization=qat_int4_weight_only"):
        quantize_model(build("gpt"), QuantizationConfig(method="qat_int4_weight_only"))
    with pytest.raises(ConfigError, match="archlab quantize"):
        prepare_qat(build("gpt"), QuantizationConfig(method="int8_weight_only"))
    with pytest.raises(ConfigError, match="packed"):
        QuantizationConfig(method="int8_dynamic_int4_weight", int4_format="packed")
    model = build("gpt")
    quantize_model(model, QuantizationConfig(method="int8_weight_only"))
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_model(model, QuantizationConfig(method="int4_weight_only"))


@pytest.mark.parametrize("method", ["qat_int4_weight_only", "qat_int8_dynamic_int4_weight"])
@pytest.mark.parametrize("name", ["llama", "mixtral"])
def test_qat_prepare_fakes_the_quantization_and_convert_equals_ptq_of_the_trained_weights(name: str, method: str) -> None:
    from torchao.quantization.qat import FakeQuantizedLinear

    cfg = QuantizationConfig(method=method)
    model = build(name).train()
    ids = torch.randint(0, VOCAB, (2, 16))
    reference = logits(model, ids)
    decisions = prepare_qat(model, cfg)
    for d in decisions:
        module = model.get_submodule(d.name)
        if d.quantize and d.kind == "linear":
            assert isinstance(module, FakeQuantizedLinear), d.name
        if d.quantize and d.kind == "experts":
            assert module.weight_quantizer is not None
    faked = logits(model, ids)
    assert 1e-3 < relative_error(faked, reference) < 0.25
    # gradients reach every fake-quantized weight (straight-through estimator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(2):
        optimizer.zero_grad()
        out = model(ids)
        nn.functional.cross_entropy(out.logits.flatten(0, 1), ids.flatten()).backward()
        for d in decisions:
            if d.quantize:
                for weight in weights_of(model.get_submodule(d.name)):
                    assert weight.grad is not None and weight.grad.abs().sum() > 0, d.name
        optimizer.step()
    model.eval()
    ptq = build(name)
    ptq.load_state_dict(model.state_dict())  # fake quantization adds no state: the keys are nn.Linear's
    quantize_model(ptq, QuantizationConfig(method=cfg.spec.ptq_twin))
    faked = logits(model, ids)
    convert_qat(model, cfg)
    assert not any(isinstance(m, FakeQuantizedLinear) for m in model.modules())
    converted = logits(model, ids)
    torch.testing.assert_close(converted, logits(ptq, ids), rtol=0, atol=0)
    if method == "qat_int4_weight_only":  # weight-only: the fake-quantized forward is the converted one
        torch.testing.assert_close(converted, faked, rtol=1e-4, atol=1e-4)


# ---- through the commands ---------------------------------------------------------------------------
TINY = ["model.n_layers=2", "model.d_model=64", "model.n_heads=4", "data.max_bytes=30000", "data.val_windows=16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from framework.train import train

    out = tmp_path_factory.mktemp("q")
    result = train(compose_train([*FAST, *TINY, "trainer.max_steps=8"], output_dir=out))
    return out / "checkpoints" / "last.ckpt", result


def test_quantize_command_writes_a_loadable_checkpoint_and_a_report(trained, capsys) -> None:
    from framework.checkpoint import load_checkpoint
    from framework.cli import main
    from framework.evaluate import evaluate

    ckpt, _ = trained
    assert main(["quantize", f"ckpt={ckpt}", "quantization=int4_weight_only", "quantization.int4_format=packed"]) == 0
    printed = capsys.readouterr().out
    out = ckpt.with_name("last.int4_weight_only.ckpt")
    report = json.loads(out.with_name(out.name + ".json").read_text())
    assert f"wrote {out}" in printed and "kept in full precision: tok_emb" in printed
    assert report["linear_bytes_ratio"] <= 0.19 and report["quantized_modules"] == 12
    assert abs(report["val_loss_after"] - report["val_loss_before"]) / report["val_loss_before"] < 0.03
    raw = torch.load(out, weights_only=True)  # no pickled code: torchao's tensor types are allow-listed
    assert raw["archlab_quantization"]["config"]["method"] == "int4_weight_only"
    model, hparams = load_checkpoint(out)
    assert is_quantized(model.blocks[0].mixer.q_proj.weight)
    assert model.lm_head.weight is model.tok_emb.weight  # the tie survives the round trip
    again = evaluate(model, hparams, hparams["data_config"])
    assert again["val_loss"] == pytest.approx(report["val_loss_after"], abs=1e-5)
    assert again["bits_per_byte"] == pytest.approx(again["val_loss"] / 0.6931471805599453)

    assert main(["eval", f"ckpt={out}", "json=true"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["quantization"] == "int4_weight_only" and metrics["val_loss"] == pytest.approx(again["val_loss"])
    assert main(["generate", f"ckpt={out}", "prompt=ROMEO:", "max_new_tokens=8", "temperature=0"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")


def test_quantize_command_refuses_what_would_lose_or_compound_work(trained, capsys) -> None:
    from framework.cli import main

    ckpt, _ = trained
    assert main(["quantize", f"ckpt={ckpt}", "quantization=int8_weight_only", "eval=false"]) == 0
    out = ckpt.with_name("last.int8_weight_only.ckpt")
    written = out.read_bytes()
    capsys.readouterr()
    cases = [
        (["quantization=int8_weight_only"], "out: .* exists; pass overwrite=true"),
        (["quantization=int3"], "quantization: 'int3' is not one of int4_weight_only, int8_dynamic"),
        (["quantization=qat_int4_weight_only"], "quantization-aware training method"),
        (["quantization=int4_weight_only", "quantization.group_size=128"], r"q_proj \(in_features 64\)"),
        (["quantization=int8_weight_only", "quantization.bits=3"], "quantization: unknown field.*bits"),
    ]
    for args, message in cases:
        assert main(["quantize", f"ckpt={ckpt}", *args]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert __import__("re").search(message, err), (args, err)
    assert main(["quantize", f"ckpt={out}", "quantization=int4_weight_only"]) == 2
    assert "already quantized (int8_weight_only)" in capsys.readouterr().err
    assert out.read_bytes() == written


def test_training_with_a_post_training_method_explains_the_difference(tmp_path) -> None:
    from framework.train import check_config

    cfg = compose_train([*FAST, *TINY, "quantization=int8_weight_only"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match="post-training method: quantize the trained checkpoint with `archlab quantize"):
        check_config(cfg)
    cfg = compose_train([*FAST, *TINY, "quantization=qat_int4_weight_only", "quantization.group_size=128"],
                        output_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"in_features 64"):
        check_config(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_qat_training_converts_at_the_end_and_resumes_mid_qat(tmp_path) -> None:
    """8 steps in one go == 4 steps, kill, resume to 8 (same converted weights); the run ends with a converted
    checkpoint whose val loss is close to the fake-quantized model's."""
    from framework.checkpoint import load_checkpoint
    from framework.train import train

    qat = ["quantization=qat_int4_weight_only", "checkpoint.every_n_steps=4", "trainer.val_check_interval=4"]
    whole = train(compose_train([*FAST, *TINY, *qat, "trainer.max_steps=8"], output_dir=tmp_path / "whole"))
    first = compose_train([*FAST, *TINY, *qat, "trainer.max_steps=4"], output_dir=tmp_path / "split")
    train(first)
    resumed = train(compose_train([*FAST, *TINY, *qat, "trainer.max_steps=8", "resume=true"],
                                  output_dir=tmp_path / "split"))
    paths = [whole["quantized_checkpoint"], resumed["quantized_checkpoint"]]
    assert all(p and p.endswith("last.qat_int4_weight_only.ckpt") for p in paths)
    (a, _), (b, hparams) = (load_checkpoint(p) for p in paths)
    assert hparams["quantization"]["method"] == "int4_weight_only"
    assert is_quantized(a.blocks[0].ffn.up_proj.weight)
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        x = x.dequantize() if is_quantized(x) else x
        y = y.dequantize() if is_quantized(y) else y
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=key)
    # the last.ckpt of a QAT run holds float weights, and resuming it without QAT is refused
    with pytest.raises(ConfigError, match="trained with quantization=qat_int4_weight_only"):
        from framework.train import check_config

        check_config(compose_train([*FAST, *TINY, "trainer.max_steps=12", "resume=true"],
                                   output_dir=tmp_path / "split"))


def test_int8pack_kernel_equals_its_bf16_reference_and_round_trips_through_a_checkpoint(trained) -> None:
    """int8_kernel=int8pack: each swapped Linear computes bf16(x) @ the dequantized weight (the kernel's definition),
    and `archlab quantize` writes a checkpoint that loads back to the same logits."""
    from framework.checkpoint import load_checkpoint
    from framework.cli import main

    linear = nn.Linear(64, 48)
    packed = Int8PackedLinear.from_linear(linear)
    x = torch.randn(3, 5, 64)
    reference = (x.bfloat16().float() @ packed.weight.t()).bfloat16().float() + linear.bias
    torch.testing.assert_close(packed(x), reference, rtol=2e-2, atol=2e-2)
    assert relative_error(packed(x), linear(x)) < 0.02

    ckpt, _ = trained
    out = ckpt.with_name("last.int8pack.ckpt")
    assert main(["quantize", f"ckpt={ckpt}", "quantization=int8_weight_only", "quantization.int8_kernel=int8pack",
                 f"out={out}"]) == 0
    report = json.loads(out.with_name(out.name + ".json").read_text())
    assert abs(report["val_loss_change_pct"]) < 0.5 and report["linear_bytes_ratio"] < 0.26
    model, _ = load_checkpoint(out)
    assert isinstance(model.blocks[0].mixer.q_proj, Int8PackedLinear)
    fresh, _ = load_checkpoint(ckpt)
    quantize_model(fresh, QuantizationConfig(method="int8_weight_only", int8_kernel="int8pack"))
    ids = torch.randint(0, 64, (2, 12))
    torch.testing.assert_close(logits(model, ids), logits(fresh, ids), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_model(model, QuantizationConfig(method="int8_weight_only"))
    with pytest.raises(ConfigError, match="int8_kernel: 'int8pack' exists for method int8_weight_only only"):
        QuantizationConfig(method="int4_weight_only", int8_kernel="int8pack")
