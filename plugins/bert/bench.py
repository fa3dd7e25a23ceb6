"""``archlab bench encoders``: training throughput of our encoder (and encoder-decoder) plugins against
Hugging Face at equal size, in the same run, as ratios.

Registered as the ``encoders`` entry of the ``archlab.benchmarks`` entry-point group. It lives in the bert
plugin, yet also times t5: the cases are timed interleaved round by round in one table, which one module
keeps simple (``--models`` picks cases). t5 is reached only through the registry (``build_model("t5", ...)``),
never by importing ``plugins.t5``, so plugins still import only ``framework``; without the t5 plugin
installed, ``--models bert`` still runs. The shared timing and table helpers are ``framework.bench.common``.

Each training step is forward + fp32 cross-entropy over the labelled positions + backward + AdamW,
identical code for both sides; only the model differs, and each side computes logits as its own training
does: our bert gets ``predict_mask`` (the labelled positions), as ``archlab train`` passes it, and runs its
MLM head on those ~15% of tokens; Hugging Face's BertForMaskedLM scores every position. Hugging Face runs with
``attn_implementation="sdpa"`` (its fastest CPU path). Every variant, both dtypes, is timed interleaved
round by round (``framework.bench.common``), so "ours / HF" ratios hold on a shared machine.

Architectures are rows of ``CASES`` below: each ``Case`` says how to build ours and the reference at a
size, what a batch holds and how each side turns it into logits. Adding an architecture is adding a Case.

    archlab bench encoders                                   # d256 L4 H8, batch 8 x 256, fp32 and bf16
    archlab bench encoders --sizes 256x4x8,512x8x8 --steps 20 --dtype bf16
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from framework import build_model
from framework.bench.common import (
    Column,
    autocast,
    describe_device,
    format_table,
    paired_ratios,
    pick_device,
    quartiles,
    time_interleaved,
    verdict_vs_hf,
)
from framework.output import ModelOutput

TARGET_RATIO = 1.0  # the goal: ours at least as fast as Hugging Face
MASK_RATE = 0.15


@dataclass(frozen=True)
class Size:
    d_model: int
    n_layers: int  # encoder-decoders: layers in each stack
    n_heads: int

    @property
    def label(self) -> str:
        return f"d{self.d_model} L{self.n_layers} H{self.n_heads}"

    @classmethod
    def parse(cls, spec: str) -> Size:
        """``DxLxH``, e.g. ``512x8x8``."""
        try:
            parts = [int(p) for p in spec.lower().split("x")]
        except ValueError:
            parts = []
        if len(parts) != 3 or min(parts) < 1:
            raise ValueError(f"size {spec!r}: expected DxLxH with positive integers, e.g. 512x8x8")
        if parts[0] % parts[2]:
            raise ValueError(f"size {spec!r}: d_model ({parts[0]}) must be divisible by heads ({parts[2]})")
        return cls(*parts)


@dataclass
class BenchConfig:
    sizes: list[Size] = field(default_factory=lambda: [Size(256, 4, 8)])
    batch: int = 8
    seq: int = 256
    vocab: int = 256                    # byte-level
    steps: int = 10                     # timed rounds; each round runs one step of every variant
    warmup: int = 2                     # untimed steps per variant first
    dtypes: tuple[str, ...] = ("fp32", "bf16")
    models: tuple[str, ...] | None = None  # case names; None = every case
    device: str = "auto"
    threads: int | None = None          # CPU intra-op threads; None = torch's default

    def __post_init__(self) -> None:
        names = [c.name for c in CASES]
        self.models = tuple(self.models or names)
        for m in self.models:
            if m not in names:
                raise ValueError(f"models: {m!r} is not one of {', '.join(names)}")
        for d in self.dtypes:
            if d not in ("fp32", "bf16", "fp16"):
                raise ValueError(f"dtype: {d!r} is not one of fp32, bf16, fp16")
        for name in ("batch", "seq", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab < 3:
            raise ValueError(f"vocab must be >= 3, got {self.vocab}")


Batch = dict[str, torch.Tensor]  # model inputs plus "labels" (-100 = not scored)


@dataclass(frozen=True)
class Case:
    """One architecture: ours against its Hugging Face reference at the same size."""

    name: str                                              # the --models choice, e.g. "bert"
    hf_label: str                                          # the reference's row label
    build_ours: Callable[[Size, BenchConfig], nn.Module]
    build_hf: Callable[[Size, BenchConfig], nn.Module]
    make_batch: Callable[[BenchConfig, torch.Generator], Batch]
    # -> (logits (..., V), labels (...)) aligned with each other: (B, T, V) and batch["labels"], or the
    # scored positions only when the model computes just those (ModelOutput.scored)
    ours_logits: Callable[[nn.Module, Batch], tuple[torch.Tensor, torch.Tensor]]
    hf_logits: Callable[[nn.Module, Batch], tuple[torch.Tensor, torch.Tensor]]


def _aligned(out: ModelOutput, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    return out.logits, out.aligned_labels(batch["labels"])


# --- bert vs BertForMaskedLM ----------------------------------------------------------------------


def masked_lm_batch(cfg: BenchConfig, gen: torch.Generator) -> Batch:
    """Random ids, MASK_RATE of the positions replaced by [MASK] (the last id) and scored."""
    ids = torch.randint(0, cfg.vocab - 1, (cfg.batch, cfg.seq), generator=gen)
    chosen = torch.rand(cfg.batch, cfg.seq, generator=gen) < MASK_RATE
    return {"input_ids": ids.masked_fill(chosen, cfg.vocab - 1), "labels": ids.masked_fill(~chosen, -100)}


def build_bert(size: Size, cfg: BenchConfig) -> nn.Module:
    return build_model("bert", vocab_size=cfg.vocab, d_model=size.d_model, n_layers=size.n_layers,
                       n_heads=size.n_heads, max_seq_len=cfg.seq, dropout=0.0)


def build_hf_bert(size: Size, cfg: BenchConfig) -> nn.Module:
    import transformers

    hf_cfg = transformers.BertConfig(
        vocab_size=cfg.vocab, hidden_size=size.d_model, num_hidden_layers=size.n_layers,
        num_attention_heads=size.n_heads, intermediate_size=4 * size.d_model, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=cfg.seq,
        type_vocab_size=2, layer_norm_eps=1e-12, tie_word_embeddings=True,
    )
    hf_cfg._attn_implementation = "sdpa"
    return transformers.BertForMaskedLM(hf_cfg)


BERT = Case(
    name="bert", hf_label="HF BertForMaskedLM (sdpa)", build_ours=build_bert, build_hf=build_hf_bert,
    make_batch=masked_lm_batch,
    ours_logits=lambda model, b: _aligned(model(b["input_ids"], predict_mask=b["labels"] != -100), b),
    hf_logits=lambda model, b: (model(input_ids=b["input_ids"]).logits, b["labels"]),
)


# --- t5 vs T5ForConditionalGeneration (v1.0 layout: ReLU FFN, tied head; HF 5.x always ties) -------


def seq2seq_batch(cfg: BenchConfig, gen: torch.Generator) -> Batch:
    """Sources of cfg.seq tokens, targets of cfg.seq // 4 (span-corruption proportions), all scored."""
    src = torch.randint(2, cfg.vocab, (cfg.batch, cfg.seq), generator=gen)
    tgt = torch.randint(2, cfg.vocab, (cfg.batch, max(1, cfg.seq // 4)), generator=gen)
    dec = torch.cat([torch.zeros_like(tgt[:, :1]), tgt[:, :-1]], dim=1)  # start token 0, shifted right
    return {"input_ids": src, "attention_mask": torch.ones_like(src), "decoder_input_ids": dec, "labels": tgt}


def build_t5(size: Size, cfg: BenchConfig) -> nn.Module:
    return build_model("t5", vocab_size=cfg.vocab, d_model=size.d_model, n_layers=size.n_layers,
                       n_heads=size.n_heads, d_ff=4 * size.d_model, max_seq_len=cfg.seq, dropout=0.0)


def build_hf_t5(size: Size, cfg: BenchConfig) -> nn.Module:
    import transformers

    hf_cfg = transformers.T5Config(
        vocab_size=cfg.vocab, d_model=size.d_model, d_kv=size.d_model // size.n_heads, d_ff=4 * size.d_model,
        num_layers=size.n_layers, num_heads=size.n_heads, dropout_rate=0.0, feed_forward_proj="relu",
        tie_word_embeddings=True, use_cache=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    hf_cfg._attn_implementation = "sdpa"
    return transformers.T5ForConditionalGeneration(hf_cfg)


T5 = Case(
    name="t5", hf_label="HF T5ForConditionalGeneration (sdpa)", build_ours=build_t5, build_hf=build_hf_t5,
    make_batch=seq2seq_batch,
    ours_logits=lambda model, b: _aligned(model(b["input_ids"], b["attention_mask"], b["decoder_input_ids"]), b),
    hf_logits=lambda model, b: (model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                      decoder_input_ids=b["decoder_input_ids"], use_cache=False).logits, b["labels"]),
)

# Every architecture in the benchmark, in table order. To add one, write its build_ours / build_hf /
# make_batch / logits functions as for BERT above and append its Case.
CASES: list[Case] = [
    BERT,
    T5,
]


# --- the training step ----------------------------------------------------------------------------


def make_train_step(
    model: nn.Module, logits_of: Callable[[nn.Module, Batch], tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    batch: Batch, device: torch.device, dtype: str,
) -> Callable[[], None]:
    """One step: forward under autocast, fp32 cross-entropy on scored positions, backward, AdamW."""

    def step() -> None:
        with autocast(device, dtype):
            logits, targets = logits_of(model, batch)  # (..., V), (...)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run_size(size: Size, cfg: BenchConfig, device: torch.device) -> list[dict[str, Any]]:
    cases = [c for c in CASES if c.name in cfg.models]
    variants: dict[tuple[str, str], dict[str, Any]] = {}  # (case, ours|hf) -> model, optimizer, batch
    for case in cases:
        batch = {k: v.to(device) for k, v in case.make_batch(cfg, torch.Generator().manual_seed(0)).items()}
        for impl, build, logits_of in (("ours", case.build_ours, case.ours_logits), ("hf", case.build_hf, case.hf_logits)):
            torch.manual_seed(0)
            model = build(size, cfg).to(device).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
            params = sum(p.numel() for p in model.parameters())  # tied tensors once
            variants[case.name, impl] = dict(model=model, opt=opt, batch=batch, logits_of=logits_of, params=params)

    fns = {
        f"{name}/{impl}/{dtype}": make_train_step(v["model"], v["logits_of"], v["opt"], v["batch"], device, dtype)
        for dtype in cfg.dtypes for (name, impl), v in variants.items()
    }
    timings = time_interleaved(fns, device, rounds=cfg.steps, warmup=cfg.warmup)

    tokens = cfg.batch * cfg.seq
    rows = []
    for case in cases:
        matched = variants[case.name, "ours"]["params"] == variants[case.name, "hf"]["params"]
        for dtype in cfg.dtypes:
            hf_timing = timings[f"{case.name}/hf/{dtype}"]
            for impl in ("ours", "hf"):
                t = timings[f"{case.name}/{impl}/{dtype}"]
                per_round = paired_ratios(hf_timing, t) if impl == "ours" else None
                ratio = statistics.median(per_round) if per_round else None
                iqr = quartiles(per_round) if per_round else None
                rows.append(dict(
                    size=size.label, arch=case.name, impl=impl,
                    model=f"{case.name} (ours)" if impl == "ours" else case.hf_label,
                    dtype=dtype, params=variants[case.name, impl]["params"], params_match=matched,
                    seconds_per_step=t.median, spread=t.spread, tokens_per_s=tokens / t.median,
                    ratio_vs_hf=1.0 if impl == "hf" else ratio, median_ratio=hf_timing.median / t.median,
                    ratio_iqr=None if iqr is None else f"{iqr[0]:.2f}-{iqr[1]:.2f}",
                    verdict=verdict_vs_hf(ratio, iqr, matched, TARGET_RATIO),
                ))
    return rows


def run(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Benchmark every size of ``cfg``; one row per (size, case, ours|hf, dtype)."""
    device = pick_device(cfg.device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    rows: list[dict[str, Any]] = []
    for size in cfg.sizes:
        rows.extend(run_size(size, cfg, device))
    return rows


COLUMNS = [
    Column("size", "size", align="<"),
    Column("model", "model", align="<"),
    Column("dtype", "dtype", align="<"),
    Column("params", "params", "{:,}"),
    Column("tokens_per_s", "tokens/s", "{:,.0f}"),
    Column("spread", "spread", "{:.0%}"),
    Column("ratio_vs_hf", "vs HF", "{:.2f}x"),
    Column("ratio_iqr", "IQR"),
    Column("median_ratio", "tok/s ratio", "{:.2f}x"),
    Column("verdict", "verdict", align="<"),
]


def report(rows: Sequence[dict[str, Any]], cfg: BenchConfig) -> str:
    import transformers

    device = pick_device(cfg.device)
    lines = [
        f"archlab bench encoders: training step (forward + fp32 cross-entropy on scored positions + backward + "
        f"AdamW), batch {cfg.batch} x seq {cfg.seq}, vocab {cfg.vocab}, {cfg.steps} timed rounds, "
        f"device {describe_device(device)}",
        f"baseline: transformers {transformers.__version__}, attn_implementation=\"sdpa\"; dropout 0 on both sides; "
        f"bf16/fp16 = torch.autocast({device.type!r}) over fp32 weights",
        "",
        format_table(rows, COLUMNS),
        "",
        "size dD LL HH: d_model, layers (per stack), heads; params: all parameters (tied counted once);",
        "tokens/s: batch*seq / median step time; spread: (max-min)/median step time over the rounds;",
        "vs HF: median over rounds of HF step time / our step time in the same round (the verdict uses it);",
        "IQR: middle half of those per-round ratios; tok/s ratio: ours / HF median tokens/s.",
    ]
    ours = [r for r in rows if r["impl"] == "ours"]
    below = [r for r in ours if r["ratio_vs_hf"] < TARGET_RATIO or not r["params_match"]]
    lines.append("")
    lines.append(
        f"verdict: ours >= HF at every size and dtype (target {TARGET_RATIO:.1f}x)" if not below else
        f"verdict: {len(below)} of {len(ours)} rows below target {TARGET_RATIO:.1f}x: "
        + "; ".join(f"{r['size']} {r['arch']} {r['dtype']} {r['ratio_vs_hf']:.3f}x"
                    + (" (within noise)" if r["verdict"].startswith("parity") else "") for r in below)
    )
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> BenchConfig:
    names = ", ".join(c.name for c in CASES)
    p = argparse.ArgumentParser(
        prog="archlab bench encoders",
        description=f"Training throughput of our encoder plugins ({names}) vs Hugging Face at the same size.",
    )
    p.add_argument("--sizes", default="256x4x8", help="comma-separated DxLxH sizes, e.g. 256x4x8,512x8x8")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="timed rounds (one step of every variant each)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dtype", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    p.add_argument("--models", default=None, help=f"comma-separated: {names} (default: all)")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: torch's); 1 gives steadier ratios on a machine shared with other jobs")
    args = p.parse_args(list(argv))
    try:
        return BenchConfig(
            sizes=[Size.parse(s) for s in args.sizes.split(",") if s.strip()], batch=args.batch, seq=args.seq,
            vocab=args.vocab, steps=args.steps, warmup=args.warmup,
            dtypes=tuple(d.strip() for d in args.dtype.split(",") if d.strip()),
            models=tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None,
            device=args.device, threads=args.threads,
        )
    except ValueError as err:
        p.error(str(err))


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    print(report(run(cfg), cfg), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
