"""Forward properties: the output contract, aux_loss, what each position may see, padding."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ...capabilities import Encodes
from ...output import ModelOutput, takes_predict_mask
from ...shared_stats import is_shared
from ..report import CheckSkipped
from ..subject import Subject
from .common import close, fail, max_diff


def check_forward_contract(s: Subject) -> None:
    """forward returns ModelOutput: logits (B, T, vocab) float and finite, aux_loss a tensor, stats a dict of tensors."""
    model = s.build().eval()
    b, t = 2, min(8, s.seq_len)
    inputs = s.inputs(s.tokens(b, t, seed=1))
    with torch.no_grad():
        out = model(**inputs)
    if not isinstance(out, ModelOutput):
        fail(f"forward returned a {type(out).__name__}, not a framework.ModelOutput")
    t_out = inputs["decoder_input_ids"].shape[1] if s.objective == "seq2seq" else t
    expected = (b, t_out, s.vocab_size)
    if not torch.is_tensor(out.logits) or tuple(out.logits.shape) != expected:
        shape = tuple(out.logits.shape) if torch.is_tensor(out.logits) else type(out.logits).__name__
        fail(f"logits have shape {shape}, expected (B, T, vocab_size) = {expected}")
    if not out.logits.is_floating_point() or not torch.isfinite(out.logits).all():
        fail("logits must be finite floating-point scores")
    if not torch.is_tensor(out.aux_loss):
        fail(f"aux_loss is a {type(out.aux_loss).__name__}, not a tensor")
    if not isinstance(out.stats, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in out.stats.items()):
        fail("stats must be a dict of str -> tensor")
    for key, value in out.stats.items():  # shared statistics: the core averages and logs these itself
        if is_shared(key) and (value.dim() > 1 or not value.is_floating_point()):
            fail(f"stats[{key!r}]: a shared statistic (key with '/') is a float scalar or one value per layer "
                 f"(L,), got {value.dtype} of shape {tuple(value.shape)}")


def check_aux_loss(s: Subject) -> None:
    """aux_loss is a finite float scalar, in train and eval mode."""
    for mode in ("train", "eval"):
        model = s.build().train(mode == "train")
        aux = s.forward(model, **s.inputs(s.tokens(2, min(8, s.seq_len), seed=2))).aux_loss
        if not torch.is_tensor(aux) or aux.shape != ():
            fail(f"aux_loss ({mode} mode) has shape {tuple(getattr(aux, 'shape', ()))}, expected a scalar ()")
        if not aux.is_floating_point() or not torch.isfinite(aux):
            fail(f"aux_loss ({mode} mode) is {aux}, expected a finite float scalar")


def _future_leak(s: Subject, model: torch.nn.Module, base: torch.Tensor,
                 inputs: Callable[[torch.Tensor], dict[str, torch.Tensor]], seed: int) -> tuple[int, int, float] | None:
    """The first (p, leaked position, max |diff|) where changing ``base`` after position p changes logits at <= p."""
    t = base.shape[1]
    ref = s.logits(model, **inputs(base))
    for p in range(t - 1):
        row = p % 2  # one sequence of the batch at a time: its own future, not its neighbour's (MoE capacity)
        changed = base.clone()
        changed[row, p + 1:] = s.tokens(1, t - p - 1, seed=seed + p)[0]
        out = s.logits(model, **inputs(changed))[row]
        if not close(out[: p + 1], ref[row, : p + 1]):
            leaked = next(i for i in range(p + 1) if not close(out[i], ref[row, i]))
            return p, leaked, max_diff(out[: p + 1], ref[row, : p + 1])
    return None


def _last_token_changed(s: Subject, ids: torch.Tensor) -> torch.Tensor:
    changed = ids.clone()
    changed[:, -1] = (ids[:, -1] % (s.vocab_size - 1)) + 1  # a different non-PAD token at the last position
    return changed


def check_causality(s: Subject) -> None:
    """causal_lm: changing a sequence's tokens after position p never changes its logits at positions <= p."""
    leak = _future_leak(s, s.build().eval(), s.tokens(2, min(12, s.seq_len), seed=3), s.inputs, seed=100)
    if leak:
        p, leaked, diff = leak
        fail(f"changing the tokens after position {p} changed the logits at position {leaked} "
             f"(max |diff| {diff:.3g}): future tokens leak into the past")


def check_bidirectional(s: Subject) -> None:
    """masked_lm: a later token changes an earlier position's logits (the model sees both sides)."""
    model = s.build().eval()
    base = s.tokens(2, min(12, s.seq_len), seed=4)
    ref, out = (s.logits(model, **s.inputs(ids)) for ids in (base, _last_token_changed(s, base)))
    if close(out[:, 0], ref[:, 0]):
        fail("changing the last token left the first position's logits unchanged: a masked LM must see "
             "tokens on both sides")


def check_decoder_causality(s: Subject) -> None:
    """seq2seq: changing later decoder inputs never changes earlier decoder logits."""
    src = s.tokens(2, min(8, s.seq_len), seed=5)
    dec = s.tokens(2, min(8, s.seq_len), seed=6)
    leak = _future_leak(s, s.build().eval(), dec, lambda d: s.inputs(src, decoder_input_ids=d), seed=200)
    if leak:
        fail(f"changing decoder_input_ids after position {leak[0]} changed earlier decoder logits "
             f"(max |diff| {leak[2]:.3g}): the decoder sees the future")


def check_encoder_visibility(s: Subject) -> None:
    """seq2seq: every decoder position sees the whole source (changing the last source token changes position 0)."""
    model = s.build().eval()
    src = s.tokens(2, min(8, s.seq_len), seed=7)
    dec = s.tokens(2, 4, seed=8)
    ref, out = (s.logits(model, **s.inputs(ids, decoder_input_ids=dec)) for ids in (src, _last_token_changed(s, src)))
    if close(out[:, 0], ref[:, 0]):
        fail("changing the last source token left the first decoder position unchanged: the decoder must "
             "attend to the whole encoded source")


def check_encoder_independence(s: Subject) -> None:
    """seq2seq models with ``encode()``: what forward encodes does not depend on decoder_input_ids."""
    model = s.build().eval()
    if not isinstance(model, Encodes):
        raise CheckSkipped("the model has no encode()")
    captured: list[Any] = []
    original = model.encode

    def spy(*args: Any, **kwargs: Any) -> Any:
        captured.append(original(*args, **kwargs))
        return captured[-1]

    src = s.tokens(2, min(8, s.seq_len), seed=9)
    model.encode = spy  # instance attribute shadows the method for this model only
    try:
        for seed in (10, 11):
            s.logits(model, **s.inputs(src, decoder_input_ids=s.tokens(2, 4, seed=seed)))
    finally:
        del model.encode
    if len(captured) < 2:
        raise CheckSkipped("forward does not call encode()")
    first, second = (_first_tensor(c) for c in captured[:2])
    if first is None or second is None:
        raise CheckSkipped("encode() returns no tensor")
    if not close(second.float(), first.float()):
        fail("encode() output changed with decoder_input_ids: the encoder must only see the source")


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, ModelOutput):
        return value.logits
    candidates = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else [value]
    return next((v for v in candidates if torch.is_tensor(v)), None)


def check_padding_invariance(s: Subject) -> None:
    """Right padding (attention_mask 0) changes nothing at real positions: not the pad tokens' values, and
    not the padding itself (same logits as the unpadded sequence alone). The second half is skipped for
    models with a module whose ``batch_dependent`` attribute is true (outputs that depend on the other
    sequences of the batch by design, such as capacity-limited MoE routing)."""
    model = s.build().eval()
    t, real = min(12, s.seq_len), min(7, s.seq_len - 1)
    ids = s.tokens(2, t, seed=12)
    mask = torch.ones(2, t, dtype=torch.long)
    mask[0, real:] = 0  # row 0: `real` tokens then padding
    other = ids.clone()
    other[0, real:] = s.tokens(1, t - real, seed=13)
    dec = s.tokens(2, 4, seed=14) if s.objective == "seq2seq" else None
    ref, out = (s.logits(model, **s.inputs(x, mask, decoder_input_ids=dec)) for x in (ids, other))
    keep = slice(None) if s.objective == "seq2seq" else slice(0, real)  # seq2seq: all decoder positions
    if not close(out[0, keep], ref[0, keep]):
        fail(f"changing padded tokens (attention_mask=0) changed the logits at real positions "
             f"(max |diff| {max_diff(out[0, keep], ref[0, keep]):.3g}): padding must be masked out")
    if any(getattr(m, "batch_dependent", False) for m in model.modules()):
        return  # e.g. MoE capacity: which tokens an expert drops depends on the whole batch, by design
    alone = s.logits(model, **s.inputs(ids[:1, :real], torch.ones(1, real, dtype=torch.long),
                                       decoder_input_ids=None if dec is None else dec[:1]))
    if not close(ref[0, keep], alone[0, keep]):
        fail(f"a padded sequence's logits differ from the same sequence unpadded "
             f"(max |diff| {max_diff(ref[0, keep], alone[0, keep]):.3g})")


def check_predict_mask(s: Subject) -> None:
    """masked_lm, optional: a forward that takes predict_mask returns logits (N, vocab) at exactly those positions,
    equal to the full logits there, with ModelOutput.scored set to the mask."""
    model = s.build().eval()
    if not takes_predict_mask(model):
        raise CheckSkipped("forward takes no predict_mask (an optional speed-up)")
    b, t = 2, min(8, s.seq_len)
    inputs = s.inputs(s.tokens(b, t, seed=21))
    chosen = torch.zeros(b, t, dtype=torch.bool)
    chosen[0, 1], chosen[1, t - 1], chosen[1, 0] = True, True, True
    with torch.no_grad():
        full = model(**inputs).logits
        out = model(**inputs, predict_mask=chosen)
    if out.scored is None or not torch.equal(out.scored, chosen):
        fail("with predict_mask, ModelOutput.scored must be that mask")
    if tuple(out.logits.shape) != (int(chosen.sum()), s.vocab_size):
        fail(f"with predict_mask, logits have shape {tuple(out.logits.shape)}, expected (N, vocab_size) = "
             f"{(int(chosen.sum()), s.vocab_size)}")
    if not close(out.logits, full[chosen]):
        fail(f"logits at the predicted positions differ from the full logits there "
             f"(max |diff| {max_diff(out.logits, full[chosen]):.3g})")
