"""Train a model on MQAR (Zoology's multi-query associative recall) and score it: the learning checks of
tests/test_stack.py and tests/test_sparse_plugin.py."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from framework.data.tasks import mqar
from framework.optim import param_groups


def mqar_accuracy(model: nn.Module, steps: int, t: int = 32, kv: int = 4, vocab: int = 64, batch: int = 32,
                  weight_decay: float = 0.0, warmup_cosine: bool = False, lr: float = 3e-3,
                  clip: float | None = None) -> float:
    """AdamW for ``steps`` batches of fresh examples (optionally 50 warm-up steps then cosine, Zoology's recipe;
    with ``weight_decay`` only matrices decay, as in training); accuracy at the query positions of 256 new
    examples."""
    x_train, y_train = mqar(steps * batch, t, vocab, kv, torch.Generator().manual_seed(0))
    x_val, y_val = mqar(256, t, vocab, kv, torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    factor = (lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps))) if warmup_cosine else (lambda s: 1.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    for step in range(steps):
        xb, yb = x_train[step * batch : (step + 1) * batch], y_train[step * batch : (step + 1) * batch]
        loss = F.cross_entropy(model(xb).logits.flatten(0, 1), yb.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        schedule.step()
    with torch.no_grad():
        pred = model.eval()(x_val).logits.argmax(-1)
    scored = y_val != -100
    return float(((pred == y_val) & scored).sum() / scored.sum())
