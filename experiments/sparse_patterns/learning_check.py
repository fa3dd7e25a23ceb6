"""Learning check of issue 5: on MQAR, does Longformer (window + global tokens over the key-value
context) beat a plain sliding window of the same window when answers lie outside the window?

Run: .venv/bin/python experiments/sparse_patterns/learning_check.py   (~2-4 min on 2 CPU cores)
Writes results.json next to this file. Same set-up as tests/test_sparse_plugin.py's slow test, with
three seeds and more steps.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from framework.data.tasks import mqar
from framework.nn.sparse import SparseAttentionConfig
from framework.stack import StackConfig, StackLM

T, KV, VOCAB, WINDOW, STEPS, BATCH = 32, 4, 64, 3, 500, 32
VARIANTS = {"sliding_window": ("sliding_window", 0), "longformer": ("longformer", 2 * KV),
            "bigbird": ("bigbird", 2 * KV), "dense": ("sliding_window", -1)}  # -1: window >= T, i.e. dense


def accuracy(kind: str, n_global: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    x_train, y_train = mqar(STEPS * BATCH, T, VOCAB, KV, torch.Generator().manual_seed(seed))
    x_val, y_val = mqar(1000, T, VOCAB, KV, torch.Generator().manual_seed(1000 + seed))
    window = T if n_global < 0 else (8 if kind == "bigbird" else WINDOW)
    sparse = SparseAttentionConfig(window=window, block_size=8, n_global=max(n_global, 0), n_random=1)
    model = StackLM(StackConfig(vocab_size=VOCAB, d_model=64, n_layers=2, n_heads=2, max_seq_len=T,
                                mixer=kind, sparse=sparse))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    start = time.perf_counter()
    for step in range(STEPS):
        xb, yb = x_train[step * BATCH : (step + 1) * BATCH], y_train[step * BATCH : (step + 1) * BATCH]
        loss = F.cross_entropy(model(xb).logits.flatten(0, 1), yb.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = model.eval()(x_val)
    scored = y_val != -100
    acc = float(((out.logits.argmax(-1) == y_val) & scored).sum() / scored.sum())
    return {"val_acc": acc, "train_loss": float(loss.detach()), "density": float(out.stats["attn/density"].mean()),
            "seconds": time.perf_counter() - start}


def main() -> int:
    torch.set_num_threads(1)
    results = {name: [accuracy(kind, g, seed) for seed in (0, 1, 2)] for name, (kind, g) in VARIANTS.items()}
    for name, runs in results.items():
        accs = [r["val_acc"] for r in runs]
        print(f"{name:15s} val_acc {' '.join(f'{a:.3f}' for a in accs)}  mean {sum(accs) / len(accs):.3f}  "
              f"density {runs[0]['density']:.3f}")
    setup = dict(T=T, num_kv=KV, vocab=VOCAB, window=WINDOW, steps=STEPS, batch=BATCH, d_model=64, n_layers=2,
                 n_heads=2, lr=3e-3, bigbird="window 8 (block 8 must divide it), 8 global, 1 random block")
    (Path(__file__).parent / "results.json").write_text(json.dumps({"setup": setup, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
