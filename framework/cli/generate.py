"""``archlab generate ckpt=... prompt=...``: sample from a checkpoint."""
from __future__ import annotations

import sys

import torch

from ..capabilities import Generates
from ..checkpoint import load_checkpoint
from ..data.tokenizer import tokenizer_from_hparams
from ..generation.text import ByteSentinelCodec, PromptCodec

_FIELDS = {"ckpt": str, "prompt": str, "max_new_tokens": int, "temperature": float, "top_k": int, "top_p": float,
           "seed": int, "device": str, "compile": str,
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
        model, hparams = load_checkpoint(args["ckpt"], map_location=args["device"])
        if not isinstance(model, Generates):
            raise ValueError(f"ckpt: this model ({type(model).__name__}) has no generate()")
        if getattr(model, "is_encoder_decoder", False):  # source -> target: framework/generation/seq2seq.py
            print(generate_encoder_decoder(model, args))
            return 0
        if any(k in args for k in ("ids", "num_beams", "length_penalty")):
            raise ValueError("ids, num_beams, length_penalty: only for encoder-decoder checkpoints (objective seq2seq)")
        tokenizer = tokenizer_from_hparams(hparams)  # the run's: bytes, its bpe or its tokenizer.json
        ids = torch.tensor([tokenizer.encode(args["prompt"].encode().decode("unicode_escape"))], device=args["device"])
        generator = torch.Generator(device=args["device"]).manual_seed(args["seed"])
        extra = {}
        if args.get("compile") is not None:
            if args["compile"] not in ("true", "false"):
                raise ValueError(f"compile: {args['compile']!r} is not true or false")
            if args["compile"] == "true":
                extra["compile"] = True  # decoder-stack checkpoints: torch.compile the decode step
        out = model.generate(ids, max_new_tokens=args["max_new_tokens"], temperature=args["temperature"],
                             top_k=args.get("top_k"), top_p=args.get("top_p"), generator=generator, **extra)
    except ValueError as err:
        print(f"archlab generate: error: {err}", file=sys.stderr)
        return 2
    print(tokenizer.decode(out[0].tolist()))
    return 0


def generate_encoder_decoder(model: torch.nn.Module, args: dict) -> str:
    """``archlab generate`` for encoder-decoder checkpoints: the source is ``ids`` (space-separated
    token ids, e.g. a synthetic task's "5 3 9") or else ``prompt`` through the model's text codec
    (``framework.generation.text``: its own ``encode_prompt``/``decode_target``, or UTF-8 bytes with
    span-corruption sentinels); EOS is appended when missing. Prints the target: ids for an ``ids``
    source, else text."""
    cfg = model.config
    codec = model if isinstance(model, PromptCodec) else ByteSentinelCodec(cfg.vocab_size)
    if args.get("ids"):
        try:
            source = [int(tok) for tok in args["ids"].replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"ids: {args['ids']!r} is not a list of integer token ids") from None
    else:
        source = codec.encode_prompt(args["prompt"].encode().decode("unicode_escape"))
    if not source or any(not 0 <= t < cfg.vocab_size for t in source):
        raise ValueError(f"ids: the source must be non-empty token ids in [0, {cfg.vocab_size})")
    if source[-1] != cfg.eos_token_id:
        source.append(cfg.eos_token_id)
    device = args.get("device", "cpu")
    generator = torch.Generator(device=device).manual_seed(args.get("seed", 0))
    out = model.generate(
        torch.tensor([source], device=device), max_new_tokens=args["max_new_tokens"],
        temperature=args["temperature"], top_k=args.get("top_k"), top_p=args.get("top_p"),
        num_beams=args.get("num_beams", 1), length_penalty=args.get("length_penalty", 1.0), generator=generator,
    )[0].tolist()
    if cfg.eos_token_id in out:
        out = out[: out.index(cfg.eos_token_id)]
    if args.get("ids"):
        return " ".join(map(str, out))
    return codec.decode_target(out)
