"""Forward properties: the output contract, aux_loss, what each position may see, padding."""
from __future__ import annotations

from typing import Any

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
        out = s.forward(model, **s.inputs(s.tokens(2, min(8, s.seq_len), seed=2)))
        aux = out.aux_loss
        if not torch.is_tensor(aux) or aux.shape != ():
            fail(f"aux_loss ({mode} mode) has shape {tuple(getattr(aux, 'shape', ()))}, expected a scalar ()")
        if not aux.is_floating_point() or not torch.isfinite(aux):
            fail(f"aux_loss ({mode} mode) is {aux}, expected a finite float scalar")


def check_causality(s: Subject) -> None:
    """causal_lm: changing a sequence's tokens after position p never changes its logits at positions <= p."""
    model = s.build().eval()
    t = min(12, s.seq_len)
    base = s.tokens(2, t, seed=3)
    ref = s.logits(model, **s.inputs(base))
    for p in range(t - 1):
        row = p % 2  # one sequence of the batch at a time: its own future, not its neighbour's (MoE capacity)
        changed = base.clone()
        changed[row, p + 1:] = s.tokens(1, t - p - 1, seed=100 + p)[0]
        out = s.logits(model, **s.inputs(changed))[row]
        if not close(out[: p + 1], ref[row, : p + 1]):
            leaked = next(i for i in range(p + 1) if not close(out[i], ref[row, i]))
            fail(f"changing the tokens after position {p} changed the logits at position {leaked} "
                 f"(max |diff| {max_diff(out[: p + 1], ref[row, : p + 1]):.3g}): future tokens leak into the past")


def check_bidirectional(s: Subject) -> None:
    """masked_lm: a later token changes an earlier position's logits (the model sees both sides)."""
    model = s.build().eval()
    t = min(12, s.seq_len)
    base = s.tokens(2, t, seed=4)
    ref = s.logits(model, **s.inputs(base))
    changed = base.clone()
    changed[:, -1] = (base[:, -1] % (s.vocab_size - 1)) + 1  # a different non-PAD token at the last position
    out = s.logits(model, **s.inputs(changed))
    if close(out[:, 0], ref[:, 0]):
        fail("changing the last token left the first position's logits unchanged: a masked LM must see "
             "tokens on both sides")


def check_decoder_causality(s: Subject) -> None:
    """seq2seq: changing later decoder inputs never changes earlier decoder logits."""
    model = s.build().eval()
    src = s.tokens(2, min(8, s.seq_len), seed=5)
    t = min(8, s.seq_len)
    dec = s.tokens(2, t, seed=6)
    ref = s.logits(model, **s.inputs(src, decoder_input_ids=dec))
    for p in range(t - 1):
        row = p % 2
        changed = dec.clone()
        changed[row, p + 1:] = s.tokens(1, t - p - 1, seed=200 + p)[0]
        out = s.logits(model, **s.inputs(src, decoder_input_ids=changed))[row]
        if not close(out[: p + 1], ref[row, : p + 1]):
            fail(f"changing decoder_input_ids after position {p} changed earlier decoder logits "
                 f"(max |diff| {max_diff(out[: p + 1], ref[row, : p + 1]):.3g}): the decoder sees the future")


def check_encoder_visibility(s: Subject) -> None:
    """seq2seq: every decoder position sees the whole source (changing the last source token changes position 0)."""
    model = s.build().eval()
    src = s.tokens(2, min(8, s.seq_len), seed=7)
    dec = s.tokens(2, 4, seed=8)
    ref = s.logits(model, **s.inputs(src, decoder_input_ids=dec))
    changed = src.clone()
    changed[:, -1] = (src[:, -1] % (s.vocab_size - 1)) + 1
    out = s.logits(model, **s.inputs(changed, decoder_input_ids=dec))
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
        result = original(*args, **kwargs)
        captured.append(result)
        return result

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
    if torch.is_tensor(value):
        return value
    if isinstance(value, ModelOutput):
        return value.logits
    if isinstance(value, (tuple, list)):
        return next((v for v in value if torch.is_tensor(v)), None)
    if isinstance(value, dict):
        return next((v for v in value.values() if torch.is_tensor(v)), None)
    return None


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
    ref = s.logits(model, **s.inputs(ids, mask, decoder_input_ids=dec))
    out = s.logits(model, **s.inputs(other, mask, decoder_input_ids=dec))
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
