"""Train one token mixer on MQAR (Zoology's multi-query associative recall) and print its accuracy every 250 steps.

A quick probe, not a study: a 2-layer stack of one mixer, no channel mixer (Zoology's setup), RMSNorm, AdamW
(weight decay 0.1 on matrices), 50 warm-up steps then cosine, gradient clipping at 1, fresh examples every step,
accuracy at the query positions of 256 held-out examples.

    python experiments/mqar_probe/probe.py linear_attention --steps 800 --seq-len 32 --kv 8 --width 64 --heads 4
"""
from __future__ import annotations

import argparse
import math
import time

import torch
from torch.nn import functional as F

import framework
from framework.data.tasks import mqar
from framework.optim import param_groups


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mixer")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--kv", type=int, default=4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--position", default=None, help="rope, learned, none (default: rope for attention kinds)")
    p.add_argument("--untied", action="store_true", help="an output head of its own (the MQAR study's; Zoology ties)")
    p.add_argument("--d-state", type=int, default=None, help="the SSM state per channel (mamba) or head (mamba2)")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    ssm = ({"head_dim": 16} if a.mixer == "mamba2" else {}) | ({"d_state": a.d_state} if a.d_state else {})
    extra = {"ssm": ssm} if ssm else {}
    position = a.position or ("rope" if a.mixer in ("attention", "sliding_window", "mla") else "none")
    model = framework.build_model("decoder", mixer=a.mixer, ffn="none", norm="rmsnorm", bias=False,
                                  vocab_size=a.vocab, d_model=a.width, n_layers=a.layers, n_heads=a.heads,
                                  max_seq_len=a.seq_len, position=position, tie_weights=not a.untied,
                                  **extra)
    x_train, y_train = mqar(a.steps * a.batch, a.seq_len, a.vocab, a.kv, torch.Generator().manual_seed(a.seed))
    x_val, y_val = mqar(256, a.seq_len, a.vocab, a.kv, torch.Generator().manual_seed(a.seed + 1))
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=a.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / a.steps)))
    start, history = time.time(), []
    for s in range(a.steps):
        xb, yb = x_train[s * a.batch : (s + 1) * a.batch], y_train[s * a.batch : (s + 1) * a.batch]
        loss = F.cross_entropy(model(xb).logits.flatten(0, 1), yb.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (s + 1) % 250 == 0 or s + 1 == a.steps:
            with torch.no_grad():
                pred = model.eval()(x_val).logits.argmax(-1)
                model.train()
            scored = y_val != -100
            history.append(round(float(((pred == y_val) & scored).sum() / scored.sum()), 3))
    print(f"{a.mixer} T={a.seq_len} kv={a.kv} width={a.width} heads={a.heads} steps={a.steps} lr={a.lr}"
          f"{' untied' if a.untied else ''}: "
          f"accuracy every 250 steps {history} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
