"""Collect `archlab quantize` reports (``*.ckpt.json``) and QAT runs under a folder into one markdown table, with
decode tokens/s of every checkpoint measured here (greedy, batch 1, prompt 32, 64 new tokens, one thread, median
of 3).

    python experiments/quantization/table.py outputs/quantization > experiments/quantization/table.md
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

from framework.checkpoint import load_checkpoint
from framework.evaluate import evaluate
from framework.quantization.apply import linear_bytes, model_bytes
from framework.quantization.plan import plan
from framework.quantization import QuantizationConfig
from framework.registry import get_plugin


def decode_tps(model: torch.nn.Module, vocab: int, causal: bool, new: int = 64) -> float | None:
    """Greedy tokens/s of a causal LM (after a 32-token prompt) or a seq2seq model (from a 32-token source; the
    tokens it produced, which may stop at EOS); None for a model that does not generate (an encoder). A model
    with a shorter max_seq_len (the reverse task's transformer: 16) gets half of it as the prompt or source."""
    if not hasattr(model, "generate"):
        return None
    limit = getattr(model.config, "max_seq_len", None) or 10**9
    prompt = min(32, limit // 2)
    if causal:
        new = min(new, limit - prompt)
    ids = torch.randint(0, vocab, (1, prompt), generator=torch.Generator().manual_seed(0))
    model.generate(ids, 4, temperature=0)
    times, made = [], 0
    for _ in range(3):
        start = time.perf_counter()
        out = model.generate(ids, new, temperature=0)
        times.append(time.perf_counter() - start)
        made = out.shape[-1] - (ids.shape[-1] if causal else 0)  # a causal LM's output starts with its prompt
    return made / statistics.median(times)


def row(run: str, ckpt: Path, method: str, fp32_loss: float | None) -> dict:
    model, hparams = load_checkpoint(ckpt)
    causal = get_plugin(hparams["plugin_name"]).objective == "causal_lm"
    metrics = evaluate(model, hparams, hparams["data_config"])
    decisions = plan(model, QuantizationConfig(method="int8_weight_only"))  # which modules are linear layers
    out = {"run": run, "method": method, "val_loss": metrics["val_loss"], "bits_per_byte": metrics.get("bits_per_byte"),
           "linear_MB": linear_bytes(model, decisions) / 2**20, "model_MB": model_bytes(model) / 2**20,
           "decode_tok_s": decode_tps(model, model.config.vocab_size, causal)}
    if fp32_loss:
        out["loss_vs_fp32_pct"] = 100 * (metrics["val_loss"] / fp32_loss - 1)
    return out


def main(folder: str) -> None:
    torch.set_num_threads(1)
    rows = []
    for run in sorted(p for p in Path(folder).iterdir() if (p / "checkpoints" / "last.ckpt").is_file()):
        ckpts = run / "checkpoints"
        base = row(run.name, ckpts / "last.ckpt", "fp32", None)
        rows.append(base)
        for quantized in sorted(ckpts.glob("last.*.ckpt")):
            method = quantized.name.removeprefix("last.").removesuffix(".ckpt")
            rows.append(row(run.name, quantized, method, base["val_loss"]))
    fp32 = {r["run"]: r for r in rows if r["method"] == "fp32"}
    print("| run | method | val loss | vs fp32 | bits/byte | linear weights MB | x fp32 | model MB | decode tok/s | x fp32 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    def ratio(value: float | None, base: float | None) -> float | None:  # an LSTM LM has no linear layers: "-"
        return None if value is None or not base else value / base

    for r in rows:
        base = fp32[r["run"]]
        vs = f"{r['loss_vs_fp32_pct']:+.2f}%" if "loss_vs_fp32_pct" in r else "-"
        speed = ratio(r["decode_tok_s"], base["decode_tok_s"])
        print(f"| {r['run']} | {r['method']} | {r['val_loss']:.4f} | {vs} | {num(r['bits_per_byte'], '.3f')} | "
              f"{r['linear_MB']:.2f} | {num(ratio(r['linear_MB'], base['linear_MB']), '.3f')} | {r['model_MB']:.2f} | "
              f"{num(r['decode_tok_s'], '.0f')} | {num(speed, '.2f')} |")
    by = {(r["run"], r["method"]): r["val_loss"] for r in rows}
    for run, base in fp32.items():
        qat = by.get((f"{run}_qat", "qat_int4_weight_only"))
        ptq = by.get((run, "int4_weight_only"))
        if qat is not None and ptq is not None:
            gap_ptq, gap_qat = ptq - base["val_loss"], qat - base["val_loss"]
            print(f"\nQAT recovery ({run}): post-training int4 gap {gap_ptq:+.4f} nats, QAT int4 gap {gap_qat:+.4f} "
                  f"vs the fp32 run: {100 * (1 - gap_qat / gap_ptq):.0f}% of the gap recovered")
    reports = sorted(Path(folder).glob("*/checkpoints/*.ckpt.json"))
    if reports:
        print("\nkept in full precision (from the reports):")
        for path in reports:
            kept = json.loads(path.read_text())["kept"]
            reasons = sorted(set(kept.values()))
            print(f"- {path.parent.parent.name} {path.name.removesuffix('.ckpt.json')}: " + "; ".join(reasons))


if __name__ == "__main__":
    main(sys.argv[1])
