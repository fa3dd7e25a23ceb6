"""Training properties: gradients, metrics, checkpoints, learning on a synthetic task."""
from __future__ import annotations

import io
from typing import Any

import torch

from ...config_schema import validate_config
from ...lit_module import IGNORE_INDEX, token_loss
from ...nn.attention_stats import record_attention_stats
from ...output import ModelOutput
from ..report import CheckSkipped
from ..subject import Subject
from .common import close, fail, max_diff

CORE_NAMESPACES = {"train", "val", "perf", "model"}  # log keys the core writes


def _loss(out: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(out.aux_loss) or out.aux_loss.shape != ():
        raise CheckSkipped("needs a scalar aux_loss (see the aux_loss check)")
    return token_loss(out.logits, labels) + out.aux_loss.float()


def check_gradient_flow(s: Subject) -> None:
    """Backward passes of the objective's loss (+ aux_loss) on three batches give every trainable parameter a
    finite gradient (zero is allowed: a routed expert may receive no token of these batches)."""
    model = s.build().train()
    for seed in (15, 16, 17):  # gradients accumulate over the batches
        inputs = s.inputs(s.tokens(4, s.seq_len, seed=seed))
        out = s.forward(model, **inputs)
        labels = torch.randint(0, s.vocab_size, out.logits.shape[:2], generator=torch.Generator().manual_seed(seed))
        _loss(out, labels).backward()
    trainable = [(name, p.grad) for name, p in model.named_parameters() if p.requires_grad]
    missing = [name for name, grad in trainable if grad is None]
    bad = [name for name, grad in trainable if grad is not None and not torch.isfinite(grad).all()]
    problems = [f"{what} {', '.join(names)}" for what, names in
                (("no gradient reaches", missing), ("non-finite gradient for", bad)) if names]
    if problems:
        fail("; ".join(problems) + " (freeze unused parameters with requires_grad=False or remove them)")


def check_metrics(s: Subject) -> None:
    """metrics(config) gives fresh torchmetrics Metrics; each update(stats) works on train and validation
    outputs (attention statistics recorded) and compute() returns finite tensors."""
    from torchmetrics import Metric

    config = s.config()
    first, second = s.plugin.metrics(config), s.plugin.metrics(config)
    if not isinstance(first, dict):
        fail(f"metrics(config) returned a {type(first).__name__}, not a dict name -> Metric")
    for name, metric in first.items():
        if not isinstance(name, str) or not name:
            fail(f"metric name {name!r} must be a non-empty string (its full log key, e.g. '{s.name}/<name>')")
        if name.split("/")[0] in CORE_NAMESPACES:
            fail(f"metric name {name!r} is in the core's namespace {name.split('/')[0]}/ (the core adds train/ "
                 f"itself); prefix it with the plugin's name, e.g. '{s.name}/{name.split('/', 1)[-1]}'")
        if not isinstance(metric, Metric):
            fail(f"metric {name!r} is a {type(metric).__name__}, not a torchmetrics.Metric")
        if second.get(name) is metric:
            fail(f"metric {name!r} is the same object on every call; return fresh instances")
    model = s.build()
    inputs = s.inputs(s.tokens(2, s.seq_len, seed=17))  # full length: some statistics need long sequences
    outputs = [s.forward(model.train(), **inputs)]
    record_attention_stats(model, True)  # what validation batches carry
    try:
        with torch.no_grad():
            outputs.append(s.forward(model.eval(), **inputs))
    finally:
        record_attention_stats(model, False)
    for name, metric in first.items():
        for out in outputs:
            try:
                metric.update(out.stats)
            except Exception as err:
                fail(f"metric {name!r}: update(stats) failed with {type(err).__name__}: {err} "
                     f"(stats keys: {', '.join(sorted(out.stats)) or 'none'})")
        value = metric.compute()
        for key, v in _flatten(name, value).items():
            if not torch.is_tensor(v) or not torch.isfinite(v.float()).all():
                fail(f"metric {key!r} computed {v!r}, expected finite tensors")
        metric.reset()


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    """A metric's (possibly nested dict) result keyed as logged: ``<name>/<key>``."""
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for key, sub in value.items() for k, v in _flatten(f"{prefix}/{key}", sub).items()}


def check_checkpoint_roundtrip(s: Subject) -> None:
    """The state dict saved in archlab's checkpoint layout loads (weights_only) into a freshly built model and
    reproduces the logits."""
    model = s.build(seed=0).eval()
    inputs = s.inputs(s.tokens(2, min(8, s.seq_len), seed=18))
    ref = s.logits(model, **inputs)
    ckpt = {"hyper_parameters": {"plugin_name": s.name, "model_config": dict(s.values)},
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    buffer.seek(0)
    try:
        loaded = torch.load(buffer, map_location="cpu", weights_only=True)
    except Exception as err:
        fail(f"the checkpoint does not load with weights_only=True: {err}")
    hp = loaded["hyper_parameters"]
    fresh = s.plugin.build(validate_config(s.plugin.config_class, hp["model_config"])).eval()
    torch.manual_seed(1)  # a different init, so a silent no-op load would show
    state = {k.removeprefix("model."): v for k, v in loaded["state_dict"].items()}
    try:
        fresh.load_state_dict(state, strict=True)
    except Exception as err:
        fail(f"load_state_dict(strict=True) failed: {err}")
    out = s.logits(fresh, **inputs)
    if not close(out, ref):
        fail(f"the reloaded model's logits differ (max |diff| {max_diff(out, ref):.3g}): some state is not "
             "in state_dict (register buffers, or rebuild derived tensors from the config)")


def _training_batch(s: Subject) -> dict[str, torch.Tensor]:
    """A fixed batch of the framework's own synthetic task for this objective. The synthetic data builds
    causal_lm and masked_lm batches; a seq2seq plugin composed only with it (its config does not compose with
    data=seq2seq) gets a kit-made copy task."""
    from ...data.build import build_datamodule
    from ...data.errors import DataConfigError

    try:
        dm = build_datamodule(dict(s.data), objective=s.objective)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))
    except DataConfigError:
        if s.objective != "seq2seq":
            raise
    ids = s.tokens(8, s.seq_len, seed=19)
    dec = torch.cat([torch.zeros(8, 1, dtype=torch.long), ids[:, :-1]], dim=1)
    return {"input_ids": ids, "decoder_input_ids": dec, "labels": ids.clone()}


def _label_entropy(labels: torch.Tensor) -> float:
    """Cross-entropy of the best input-blind predictor (the labels' own frequencies) on this batch."""
    scored = labels[labels != IGNORE_INDEX]
    p = torch.bincount(scored).float()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


def check_learns(s: Subject, steps: int = 40, lr: float = 1e-2, min_drop: float = 0.15) -> None:
    """A few AdamW steps on one fixed synthetic batch lower the loss by 15% and below what ignoring the input reaches."""
    model = s.build(seed=0).train()
    batch = _training_batch(s)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        out = s.forward(model, **inputs)
        loss = _loss(out, batch["labels"])
        if not torch.isfinite(loss):
            fail(f"the loss became {loss.item()} after {len(losses)} steps")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last, blind = losses[0], min(losses[-3:]), _label_entropy(batch["labels"])
    if not (last < (1 - min_drop) * first and last < blind):
        fail(f"{steps} AdamW steps (lr {lr}) on one fixed batch moved the loss only from {first:.3f} to {last:.3f}; "
             f"expected a {min_drop:.0%} drop and less than {blind:.3f} (the labels' entropy, reached by ignoring "
             "the input)")
