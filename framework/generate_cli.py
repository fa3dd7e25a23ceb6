"""``archlab generate ckpt=... prompt=...``: sample from a checkpoint."""
from __future__ import annotations

import sys

import torch

from .checkpoint import load_checkpoint
from .data.tokenizer import ByteTokenizer
from .seq2seq_generation import generate_from_cli

_FIELDS = {"ckpt": str, "prompt": str, "max_new_tokens": int, "temperature": float, "top_k": int, "top_p": float,
           "seed": int, "device": str,
           "ids": str, "num_beams": int, "length_penalty": float}  # encoder-decoder checkpoints only


def parse_key_values(argv: list[str]) -> dict:
    args: dict = {"prompt": "\n", "max_new_tokens": 200, "temperature": 0.8, "seed": 0, "device": "cpu"}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in _FIELDS:
            raise ValueError(f"{item!r}: expected key=value with key in {', '.join(_FIELDS)}")
        try:
            args[key] = _FIELDS[key](value)
        except ValueError:
            raise ValueError(f"{key}: {value!r} is not a valid {_FIELDS[key].__name__}") from None
    if "ckpt" not in args:
        raise ValueError("ckpt: required (path to a .ckpt written by archlab train)")
    return args


def run_generate(argv: list[str]) -> int:
    try:
        args = parse_key_values(argv)
        model, _ = load_checkpoint(args["ckpt"], map_location=args["device"])
        if not hasattr(model, "generate"):
            raise ValueError(f"ckpt: this model ({type(model).__name__}) has no generate()")
        if getattr(model, "is_encoder_decoder", False):  # source -> target: framework/seq2seq_generation.py
            print(generate_from_cli(model, args))
            return 0
        if any(k in args for k in ("ids", "num_beams", "length_penalty")):
            raise ValueError("ids, num_beams, length_penalty: only for encoder-decoder checkpoints (t5, transformer)")
        tokenizer = ByteTokenizer()
        ids = torch.tensor([tokenizer.encode(args["prompt"].encode().decode("unicode_escape"))], device=args["device"])
        generator = torch.Generator(device=args["device"]).manual_seed(args["seed"])
        out = model.generate(ids, max_new_tokens=args["max_new_tokens"], temperature=args["temperature"],
                             top_k=args.get("top_k"), top_p=args.get("top_p"), generator=generator)
    except ValueError as err:
        print(f"archlab generate: error: {err}", file=sys.stderr)
        return 2
    print(tokenizer.decode(out[0].tolist()))
    return 0
