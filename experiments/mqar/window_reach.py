"""What a local window can reach on MQAR: the accuracy bound of sliding-window and longformer attention.

A query at position q recalls its key's value only if attention can route from the value's position p to q. With a
window w (query i sees keys j with i - j < w) one hop reaches q - p <= w - 1 and two layers reach 2(w - 1);
longformer's global positions also expose the first pair. Queries that cannot reach their pair can at best guess
among the values they cannot see. Printed per (length, kv pairs) of the study, from the task's own generator:

    python experiments/mqar/window_reach.py --window 16 --examples 50000
"""
from __future__ import annotations

import argparse

import torch

from framework.data.tasks import mqar

IGNORE = -100
LENGTHS = ((64, 4), (128, 8), (256, 16))  # conf/study/mqar/length/*.yaml


def reach_bound(seq_len: int, num_kv: int, reach: int, global_first_pair: bool, examples: int = 50000,
                vocab_size: int = 64, seed: int = 0) -> tuple[float, float]:
    """(fraction of queries whose value lies within ``reach`` positions, best accuracy: those right, the rest a
    guess among the values out of reach)."""
    inputs, labels = mqar(examples, seq_len, vocab_size, num_kv, torch.Generator().manual_seed(seed))
    keys = inputs[:, 0:2 * num_kv:2]  # (N, kv)
    row, query = (labels != IGNORE).nonzero(as_tuple=True)
    pair = (keys[row] == inputs[row, query][:, None]).float().argmax(1)  # which pair each query asks for
    value_pos = 2 * torch.arange(num_kv) + 1
    reachable = (query[:, None] - value_pos[None, :]) <= reach  # (queries, kv)
    if global_first_pair:
        reachable[:, 0] = True
    hit = reachable[torch.arange(len(query)), pair]
    out_of_reach = (~reachable).sum(1).clamp(min=1)
    return hit.float().mean().item(), torch.where(hit, 1.0, 1.0 / out_of_reach).mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--window", type=int, default=16)  # conf/study/mqar/mixer/sliding_window.yaml
    p.add_argument("--examples", type=int, default=50000)
    args = p.parse_args()
    one, two = args.window - 1, 2 * (args.window - 1)
    print("| (length, kv) | mixer | one hop: reachable / best acc | two hops: reachable / best acc |")
    print("|---|---|---|---|")
    for seq_len, num_kv in LENGTHS:
        for name, glob in (("sliding_window", False), ("longformer", True)):
            cells = [reach_bound(seq_len, num_kv, r, glob, args.examples) for r in (one, two)]
            print(f"| ({seq_len}, {num_kv}) | {name} | " + " | ".join(f"{a:.3f} / {b:.3f}" for a, b in cells) + " |")


if __name__ == "__main__":
    main()
