"""The generation property: greedy generate equals recomputation with full forwards."""
from __future__ import annotations

import torch

from ...capabilities import Generates
from ..report import CheckSkipped
from ..subject import Subject
from .common import fail


def check_generate(s: Subject, prompt_len: int = 4, new: int = 6) -> None:
    """Greedy ``generate(temperature=0)`` equals recomputing the argmax of a full forward at every step
    (causal_lm: appended to the prompt; seq2seq: decoded from ``decoder_start_token_id``, up to EOS)."""
    model = s.build().eval()
    if not isinstance(model, Generates):
        raise CheckSkipped("the model offers no generate()")
    if s.objective == "causal_lm":
        _check_causal_generate(s, model, prompt_len, min(new, s.seq_len - prompt_len))
    elif s.objective == "seq2seq":
        _check_seq2seq_generate(s, model, new)
    else:
        raise CheckSkipped(f"no recomputation reference for {s.objective} generation")
    if model.training:
        fail("generate left the model in training mode")


def _check_causal_generate(s: Subject, model: torch.nn.Module, prompt_len: int, new: int) -> None:
    prompt = s.tokens(2, prompt_len, seed=20)
    with torch.no_grad():
        got = model.generate(prompt, max_new_tokens=new, temperature=0.0)
    expected = prompt
    for _ in range(new):
        logits = s.logits(model, **s.inputs(expected))[:, -1]
        expected = torch.cat([expected, logits.argmax(-1, keepdim=True)], dim=1)
    if not torch.is_tensor(got) or tuple(got.shape) != tuple(expected.shape):
        fail(f"generate returned {tuple(getattr(got, 'shape', ()))}, expected prompt + new tokens "
             f"{tuple(expected.shape)}")
    if not torch.equal(got, expected):
        col = int((got != expected).any(0).nonzero()[0])
        fail(f"greedy generate differs from recomputation at position {col} "
             f"(got {got[:, col].tolist()}, recomputed {expected[:, col].tolist()}); check the KV cache / positions")


def _check_seq2seq_generate(s: Subject, model: torch.nn.Module, new: int) -> None:
    """Generated tokens exclude the start token; a row ends at its EOS (what follows is padding)."""
    cfg = s.config()
    start, eos = getattr(cfg, "decoder_start_token_id", None), getattr(cfg, "eos_token_id", None)
    if start is None:
        raise CheckSkipped("the config has no decoder_start_token_id to recompute from")
    src = s.tokens(2, min(8, s.seq_len), seed=21)
    new = min(new, s.seq_len - 1)
    with torch.no_grad():
        got = model.generate(src, max_new_tokens=new, temperature=0.0)
    dec = torch.full((2, 1), start, dtype=torch.long)
    for _ in range(new):
        logits = s.logits(model, **s.inputs(src, decoder_input_ids=dec))[:, -1]
        dec = torch.cat([dec, logits.argmax(-1, keepdim=True)], dim=1)
    expected = dec[:, 1:]
    for row in range(2):
        ends = (expected[row] == eos).nonzero() if eos is not None else torch.empty(0)
        k = int(ends[0]) + 1 if len(ends) else new
        if got.shape[-1] < k or not torch.equal(got[row, :k], expected[row, :k]):
            fail(f"greedy generate gave {got[row].tolist()} for row {row}, recomputation gives "
                 f"{expected[row, :k].tolist()} (from decoder_start_token_id={start}); check the decoder cache")
