"""``archlab quantize ckpt=... quantization=<method>``: post-training quantization of a trained checkpoint.

Writes ``<ckpt stem>.<method>.ckpt`` next to the checkpoint (or ``out=``) and ``<that>.json``, the report: which
modules were quantized and which kept in full precision and why, weight bytes before/after, val loss before/after
on the checkpoint's own data config. Nothing existing is overwritten unless ``overwrite=true``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..checkpoint import load_checkpoint, read_checkpoint
from ..config_schema import ConfigError
from .options import load_group_option, parse_options

_FIELDS = {"ckpt": str, "out": str, "overwrite": bool, "eval": bool, "eval_batches": int}


def run_quantize(argv: list[str]) -> int:
    try:
        report, path = quantize_checkpoint(argv)
    except ConfigError as err:
        print(f"archlab quantize: error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    print(f"\nwrote {path} and {path}.json")
    return 0


def quantize_checkpoint(argv: list[str]):  # noqa: ANN201 - (QuantizationReport, Path)
    from ..evaluate import checkpoint_data_config, evaluate
    from ..quantization import plan, quantization_config, quantize_model
    from ..quantization.apply import check_post_training
    from ..quantization.checkpoint import KEY, quantized_path, save_quantized

    args, groups = parse_options(argv, _FIELDS, groups=("quantization", "data"))
    if "ckpt" not in args:
        raise ConfigError("ckpt: required (a checkpoint written by archlab train)")
    method = groups["quantization"]["option"]
    if method is None:
        raise ConfigError("quantization: required, e.g. quantization=int8_weight_only (options: conf/quantization/)")
    cfg = quantization_config(load_group_option("quantization", method, groups["quantization"]["overrides"]))
    check_post_training(cfg)  # QAT methods train; none quantizes nothing
    source = read_checkpoint(args["ckpt"])
    if KEY in source:
        raise ConfigError(f"ckpt: {args['ckpt']} is already quantized ({source[KEY]['config']['method']}); quantize "
                          "the full-precision checkpoint it came from")
    model, hparams = load_checkpoint(args["ckpt"])
    plan(model, cfg)  # group sizes against every layer, before anything is measured or written
    out = Path(args["out"]) if "out" in args else quantized_path(args["ckpt"], cfg.method)
    if out.exists() and not args.get("overwrite", False):
        raise ConfigError(f"out: {out} exists; pass overwrite=true to replace it, or out=<another path>")
    measure = args.get("eval", True)
    data = None
    if measure:
        data_group = groups["data"]
        if data_group["option"] is not None:
            data = load_group_option("data", data_group["option"], data_group["overrides"])
        else:
            data = checkpoint_data_config(hparams, data_group["overrides"])
    before = evaluate(model, hparams, data, args.get("eval_batches")) if measure else None
    report = quantize_model(model, cfg)
    if measure:
        after = evaluate(model, hparams, data, args.get("eval_batches"))
        report.extra.update(val_loss_before=round(before["val_loss"], 5), val_loss_after=round(after["val_loss"], 5),
                            val_loss_change_pct=round(100 * (after["val_loss"] / before["val_loss"] - 1), 3))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_quantized(out, hparams, model, cfg, report, source=str(args["ckpt"]))
    Path(f"{out}.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report, out


def format_report(report) -> str:  # noqa: ANN001 - QuantizationReport
    lines = [f"quantization {report.method}" + (f" (group_size {report.group_size})" if report.group_size else "")]
    lines.append(f"  quantized ({len(report.quantized)}): " + ", ".join(report.quantized[:8])
                 + (" ..." if len(report.quantized) > 8 else ""))
    reasons: dict[str, list[str]] = {}
    for name, reason in report.kept.items():
        reasons.setdefault(reason, []).append(name)
    for reason, names in reasons.items():
        lines.append(f"  kept in full precision: {', '.join(names[:6])}{' ...' if len(names) > 6 else ''} - {reason}")
    row = report.row()
    lines.append("")
    lines.append("| " + " | ".join(row) + " |")
    lines.append("|" + "---|" * len(row))
    lines.append("| " + " | ".join(str(v) for v in row.values()) + " |")
    return "\n".join(lines)
