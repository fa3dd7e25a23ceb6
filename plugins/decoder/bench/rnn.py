"""``archlab bench rnn``: training and generation throughput of recurrent decoders (LSTM/GRU) against a GPT of a
similar parameter count, at several sequence lengths, measured interleaved in the same run (ratios vs the GPT).

Registered as the ``rnn`` entry of the ``archlab.benchmarks`` entry-point group. Every model is
``build_model("decoder", ...)``: the GPT with the ``gpt`` preset's settings, the RNNs as a stack of recurrent
mixers only (``RNN_STACK`` below, as the ``lstm``/``gru`` presets); the table calls them gpt, lstm and gru.

Training: one step = forward + fp32 cross-entropy + backward + AdamW on a (batch, seq) batch.
Generation: the context is first filled to ``seq - gen_tokens`` tokens (untimed); then ``gen_tokens`` tokens are
decoded one at a time (greedy), the recurrent models carrying their state, gpt extending its KV cache. The
table also shows what each model keeps per sequence at that context (the recurrent state is the same at any
length; the KV cache grows with every token) and the decode FLOPs per token (constant vs growing with T).

    archlab bench rnn                                   # d128 gpt (4 layers) vs 2-layer lstm/gru, seq 256 and 2048
    archlab bench rnn --seqs 256,1024 --batch 8 --steps 5
"""
from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from framework import build_model
from framework.bench.common import (Column, add_device_args, add_int_args, autocast, comma_list, describe_device,
                                    format_table, make_train_step, matmul_params, paired, pick_device,
                                    require_positive, setup_device, time_interleaved, token_loss)

RNN_CELLS = ("lstm", "gru")
# A classic stacked RNN as a decoder stack: recurrent layers only, no norms, residuals or channel mixers.
RNN_STACK = dict(ffn="none", norm="none", residual=False, position="none")
GATES = {"lstm": 4, "gru": 3, "elman": 1}


@dataclass
class BenchConfig:
    seqs: tuple[int, ...] = (256, 2048)
    batch: int = 4                  # training batch (sequences)
    gen_batch: int = 1              # sequences decoded together
    gen_tokens: int = 32            # tokens decoded (timed) after the context is filled
    d_model: int = 128              # gpt width
    gpt_layers: int = 4
    n_heads: int = 4
    rnn_layers: int = 2             # hidden size is then chosen to match gpt's parameter count
    cells: tuple[str, ...] = RNN_CELLS
    vocab: int = 256                # byte-level
    steps: int = 3                  # timed rounds; each round runs every variant once
    warmup: int = 1
    dtype: str = "fp32"
    device: str = "auto"
    threads: int | None = None      # CPU intra-op threads; None = torch's default

    def __post_init__(self) -> None:
        for c in self.cells:
            if c not in GATES:
                raise ValueError(f"cells: {c!r} is not one of {', '.join(GATES)}")
        require_positive(self, "batch", "gen_batch", "gen_tokens", "d_model", "gpt_layers", "n_heads", "rnn_layers",
                         "steps")
        if not self.seqs or min(self.seqs) <= self.gen_tokens:
            raise ValueError(f"seqs: every length must exceed gen_tokens ({self.gen_tokens}), got {self.seqs}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")


# --- models of a similar size ----------------------------------------------------------------------


def rnn_hidden_for(target: int, cell: str, layers: int, vocab: int) -> int:
    """Smallest hidden size (a multiple of 8) whose tied rnn has >= ``target`` matmul parameters:
    per layer G * (2H^2 + 2H) (input width H, both biases), plus the V x H output layer."""
    h = 8
    while layers * GATES[cell] * (2 * h * h + 2 * h) + vocab * h < target:
        h += 8
    return h


def build_variants(cfg: BenchConfig) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    models: dict[str, nn.Module] = {
        "gpt": build_model("decoder", vocab_size=cfg.vocab, d_model=cfg.d_model, n_layers=cfg.gpt_layers,
                           n_heads=cfg.n_heads, max_seq_len=max(cfg.seqs), dropout=0.0)
    }
    target = matmul_params(models["gpt"])
    for cell in cfg.cells:
        h = rnn_hidden_for(target, cell, cfg.rnn_layers, cfg.vocab)
        models[cell] = build_model("decoder", **RNN_STACK, mixer=cell, vocab_size=cfg.vocab, d_model=h,
                                   n_layers=cfg.rnn_layers, max_seq_len=max(cfg.seqs), init_std=0.1)
    return models


# --- what is timed ---------------------------------------------------------------------------------


def _is_rnn(model: nn.Module) -> bool:
    return all(spec.carries == "recurrent" for spec in model.config.token_mixers)


def prefill(model: nn.Module, context: torch.Tensor) -> Any:
    """Run the context once; return what decoding continues from: every layer's state (KV cache or
    recurrent state)."""
    state = model.new_state()
    model(context, state=state)
    return state


def state_bytes_per_sequence(memory: Any, batch: int) -> int:
    """Bytes of the recurrent states or KV caches that one sequence keeps."""
    tensors: list[torch.Tensor] = []
    for item in memory.layers:
        value = getattr(item, "value", None)
        if value is not None:  # recurrent: h, or (h, c)
            tensors.extend(value if isinstance(value, tuple) else [value])
        else:  # KVCache
            tensors.extend([item.k, item.v])
    return sum(t.numel() * t.element_size() for t in tensors) // batch


def make_decode(model: nn.Module, memory: Any, first: torch.Tensor, n: int, device: torch.device, dtype: str) -> Callable[[], None]:
    """Decode ``n`` greedy tokens one at a time from a copy of the prefilled ``memory``."""

    def decode() -> None:
        # Layers replace (never modify) their state tensors, so shallow copies keep the prefill intact.
        state = copy.copy(memory)
        state.layers = [copy.copy(layer) for layer in memory.layers]
        with torch.no_grad(), autocast(device, dtype):
            tok = first
            for _ in range(n):
                tok = model(tok, state=state).logits[:, -1].argmax(-1, keepdim=True)

    return decode


def decode_flops_per_token(model: nn.Module, context: int) -> float:
    """2 FLOPs per matmul parameter, plus gpt's attention over the cache: 4 * layers * d_model * context."""
    flops = 2.0 * matmul_params(model)
    if not _is_rnn(model):
        cfg = model.config
        flops += 4.0 * cfg.n_layers * cfg.d_model * context
    return flops


# --- the run ---------------------------------------------------------------------------------------


def run(cfg: BenchConfig) -> list[dict[str, Any]]:
    """One row per (seq, model): tokens/s of training and generation, ratios vs gpt, state per sequence."""
    device = setup_device(cfg.device, cfg.threads)
    models = {name: m.to(device) for name, m in build_variants(cfg).items()}
    rows: list[dict[str, Any]] = []
    gen = torch.Generator().manual_seed(0)
    for seq in cfg.seqs:
        x = torch.randint(0, cfg.vocab, (cfg.batch, seq), generator=gen).to(device)
        y = torch.randint(0, cfg.vocab, (cfg.batch, seq), generator=gen).to(device)
        train_fns = {}
        for name, model in models.items():
            model.train()
            train_fns[name] = make_train_step(lambda m=model: token_loss(m(x).logits, y), model,
                                              torch.optim.AdamW(model.parameters(), lr=1e-4), device, cfg.dtype)
        train_t = time_interleaved(train_fns, device, cfg.steps, cfg.warmup)

        context = torch.randint(0, cfg.vocab, (cfg.gen_batch, seq - cfg.gen_tokens), generator=gen).to(device)
        first = context[:, -1:]
        decode_fns, memory_bytes = {}, {}
        for name, model in models.items():
            model.eval()
            with torch.no_grad(), autocast(device, cfg.dtype):
                memory = prefill(model, context[:, :-1])
            memory_bytes[name] = state_bytes_per_sequence(memory, cfg.gen_batch)
            decode_fns[name] = make_decode(model, memory, first, cfg.gen_tokens, device, cfg.dtype)
        decode_t = time_interleaved(decode_fns, device, cfg.steps, cfg.warmup)

        for name, model in models.items():
            train, decode = paired(train_t["gpt"], train_t[name]), paired(decode_t["gpt"], decode_t[name])
            rows.append({
                "seq": seq,
                "model": name if name == "gpt" else f"{name} (rnn)",
                "arch": name,
                "size": (f"d{cfg.d_model} L{cfg.gpt_layers}" if name == "gpt"
                         else f"h{model.config.d_model} L{cfg.rnn_layers}"),
                "params": sum(p.numel() for p in model.parameters()),
                "train_tokens_per_s": cfg.batch * seq / train_t[name].median,
                "train_vs_gpt": train.median,
                "train_iqr": train.iqr,
                "gen_tokens_per_s": cfg.gen_batch * cfg.gen_tokens / decode_t[name].median,
                "gen_vs_gpt": decode.median,
                "gen_iqr": decode.iqr,
                "state_kib": memory_bytes[name] / 1024,
                "decode_mflops": decode_flops_per_token(model, seq) / 1e6,
            })
    return rows


COLUMNS = [
    Column("seq", "seq"), Column("model", "model", align="<"), Column("size", "size", align="<"),
    Column("params", "params", "{:,}"),
    Column("train_tokens_per_s", "train tok/s", "{:,.0f}"), Column("train_vs_gpt", "vs gpt", "{:.2f}x"),
    Column("train_iqr", "IQR"),
    Column("gen_tokens_per_s", "gen tok/s", "{:,.0f}"), Column("gen_vs_gpt", "vs gpt", "{:.2f}x"),
    Column("gen_iqr", "IQR"),
    Column("state_kib", "state/seq KiB", "{:,.1f}"), Column("decode_mflops", "decode MFLOP/tok", "{:.2f}"),
]


def report(rows: Sequence[dict[str, Any]], cfg: BenchConfig, device: torch.device) -> str:
    lines = [
        f"archlab bench rnn on {describe_device(device)}, {cfg.dtype}; training batch {cfg.batch} x seq, AdamW; "
        f"generation: {cfg.gen_tokens} greedy tokens x {cfg.gen_batch} after a context of seq - {cfg.gen_tokens}",
        f"{cfg.steps} interleaved rounds (medians); 'vs gpt' = gpt seconds / model seconds, paired by round (> 1: faster; IQR over rounds)",
        "",
        format_table(rows, COLUMNS),
        "",
    ]
    by = {(r["seq"], r["arch"]): r for r in rows}
    seqs = sorted({r["seq"] for r in rows})
    for arch in [a for a in ("gpt", *RNN_CELLS, "elman") if (seqs[0], a) in by]:
        states = [by[s, arch]["state_kib"] for s in seqs]
        if arch == "gpt":
            per_token = (states[-1] - states[0]) / (seqs[-1] - seqs[0]) if len(seqs) > 1 else states[0] / seqs[0]
            lines.append(f"gpt: O(T) per generated token: the KV cache grows by {per_token:.2f} KiB per token "
                         f"({', '.join(f'{v:,.0f} KiB at {s}' for s, v in zip(seqs, states))}) and every token attends to all of it")
        else:
            lines.append(f"{arch}: O(1) per generated token: the state stays {states[0]:.1f} KiB at any context length")
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> BenchConfig:
    p = argparse.ArgumentParser(prog="archlab bench rnn", description=" ".join(__doc__.split("\n\n")[0].split()))
    d = BenchConfig()
    p.add_argument("--seqs", default="256,2048", help="comma-separated sequence lengths")
    add_int_args(p, d, "batch", "gen_batch", "gen_tokens", "d_model", "gpt_layers")
    p.add_argument("--heads", dest="n_heads", type=int, default=d.n_heads)
    add_int_args(p, d, "rnn_layers")
    p.add_argument("--cells", default="lstm,gru")
    add_int_args(p, d, "vocab", "steps", "warmup")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    add_device_args(p)
    a = vars(p.parse_args(list(argv)))
    try:
        return BenchConfig(**a | dict(seqs=tuple(int(s) for s in comma_list(a["seqs"])), cells=comma_list(a["cells"])))
    except ValueError as err:
        p.error(str(err))


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    device = pick_device(cfg.device)
    rows = run(cfg)
    print(report(rows, cfg, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
