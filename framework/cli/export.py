"""``archlab export ckpt=... format=hf|safetensors out=DIR``: a trained checkpoint for the world outside archlab.

``format=hf`` writes a folder ``transformers`` loads with its Auto class (``AutoModelForCausalLM`` for the decoder
presets that map to GPT-2, Llama, Mixtral, Mamba, Mamba-2, RecurrentGemma, DeepSeek-V3; ``AutoModelForMaskedLM`` for
bert; ``AutoModelForSeq2SeqLM`` for t5), after checking that the written model gives our logits; a model with no
counterpart is refused with the reason. ``format=safetensors`` writes the bare state dict.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..checkpoint import load_checkpoint
from ..config_schema import ConfigError
from ..data.tokenizer import tokenizer_from_hparams
from .options import parse_options

_FIELDS = {"ckpt": str, "format": str, "out": str, "overwrite": bool}


def run_export(argv: list[str]) -> int:
    try:
        exported = export_checkpoint(argv)
    except ConfigError as err:
        print(f"archlab export: error: {err}", file=sys.stderr)
        return 2
    if exported.format == "hf":
        print(f"wrote {exported.path} ({exported.model_type}; load it with transformers.{exported.auto_class}"
              f".from_pretrained; logits equal ours to {exported.probe_difference:.1e} on a probe batch)")
    else:
        print(f"wrote {exported.path} (safetensors state dict)")
    return 0


def export_checkpoint(argv: list[str]):  # noqa: ANN201 - Exported
    from ..interop.export import FORMATS, export_hf, export_safetensors

    args, _ = parse_options(argv, _FIELDS)
    for field in ("ckpt", "out"):
        if field not in args:
            raise ConfigError(f"{field}: required (archlab export ckpt=<checkpoint> format=hf out=<folder>)")
    kind = args.get("format", "hf")
    if kind not in FORMATS:
        raise ConfigError(f"format: {kind!r} is not one of {', '.join(FORMATS)}")
    model, hparams = load_checkpoint(args["ckpt"])
    if hparams.get("quantization"):
        raise ConfigError(f"ckpt: {args['ckpt']} is quantized ({hparams['quantization']['method']}); export the "
                          "full-precision checkpoint it came from")
    out, overwrite = Path(args["out"]), args.get("overwrite", False)
    if kind == "safetensors":
        return export_safetensors(model, hparams, out, overwrite)
    tokenizer = tokenizer_from_hparams(hparams) if hparams.get("tokenizer") else None  # synthetic data: none
    return export_hf(model, hparams, out, overwrite, tokenizer=tokenizer)
