"""Training memory per token of the long-context mixers: the peak of tensor bytes one forward + backward holds
(activations saved for backward, temporaries, gradients; parameters and inputs excluded), divided by the tokens,
at each length. Flat per token = linear memory in the context; dense attention's score-free SDPA is flat too, so its
row is the baseline, not a quadratic strawman.

    python experiments/long_context_mixers/memory_per_token.py                       # 1k, 4k, 16k
    python experiments/long_context_mixers/memory_per_token.py --seqs 1024 4096 --mixers gated_deltanet

Counted by framework.bench.tensor_memory.PeakTensorMemory (every aten op's outputs, in-process): deterministic,
so a shared machine does not change the numbers, only how long they take.
"""
from __future__ import annotations

import argparse

import torch

from framework.bench.common import token_loss
from framework.bench.tensor_memory import PeakTensorMemory
from plugins.decoder.bench.mixers import BenchConfig, _build, ours_kwargs

MIXERS = ("attention", "gated_deltanet", "linear_attention", "mamba")


def peak_bytes(mixer: str, seq: int, cfg: BenchConfig) -> int:
    torch.manual_seed(0)
    model = _build(ours_kwargs(cfg, mixer)).train()
    ids = torch.randint(0, cfg.vocab, (1, seq))
    with PeakTensorMemory() as memory:
        token_loss(model(ids).logits, ids).backward()
    return memory.peak_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seqs", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--mixers", nargs="+", default=list(MIXERS), choices=MIXERS)
    args = parser.parse_args()
    cfg = BenchConfig()  # the bench's size: d_model 256, 4 layers, 8 heads, no channel mixer
    print(f"# fwd+bwd peak tensor bytes / token, batch 1, fp32, d_model {cfg.d_model}, {cfg.n_layers} layers, "
          f"{cfg.n_heads} heads, vocab {cfg.vocab}")
    print("| mixer | " + " | ".join(f"KiB/token @{s}" for s in args.seqs) + " | last / first |")
    print("|---|" + "---|" * (len(args.seqs) + 1))
    for mixer in args.mixers:
        per_token = [peak_bytes(mixer, s, cfg) / s / 1024 for s in args.seqs]
        print(f"| {mixer} | " + " | ".join(f"{v:.1f}" for v in per_token) + f" | {per_token[-1] / per_token[0]:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
