"""``archlab eval ckpt=...``: val loss, perplexity, accuracy, bits per token / per byte of a checkpoint (full
precision or quantized) on its own data config (or ``data=<option>``, ``data.<field>=...``)."""
from __future__ import annotations

import json
import sys

from ..checkpoint import load_checkpoint
from ..config_schema import ConfigError
from .options import load_group_option, parse_options

_FIELDS = {"ckpt": str, "batches": int, "json": bool}


def run_eval(argv: list[str]) -> int:
    from ..evaluate import checkpoint_data_config, evaluate

    try:
        args, groups = parse_options(argv, _FIELDS, groups=("data",))
        if "ckpt" not in args:
            raise ConfigError("ckpt: required (a checkpoint written by archlab train or archlab quantize)")
        model, hparams = load_checkpoint(args["ckpt"])
        data_group = groups["data"]
        if data_group["option"] is not None:
            data = load_group_option("data", data_group["option"], data_group["overrides"])
        else:
            data = checkpoint_data_config(hparams, data_group["overrides"])
        metrics = evaluate(model, hparams, data, args.get("batches"))
    except ConfigError as err:
        print(f"archlab eval: error: {err}", file=sys.stderr)
        return 2
    method = (hparams.get("quantization") or {}).get("method", "none")
    if method.startswith("qat_"):  # a training checkpoint of a QAT run holds the latent float weights
        method = f"none (float weights of a {method} run; its converted model: last.{method}.ckpt)"
    metrics = {"quantization": method, **metrics}
    if args.get("json"):
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            print(f"{key:16s} {value:.5f}" if isinstance(value, float) else f"{key:16s} {value}")
    return 0
