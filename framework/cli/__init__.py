"""The ``archlab`` command: train | generate | eval | quantize | plugins | bench | new-plugin.

One module per command (``train``, ``generate``, ``plugins``); ``bench`` runs ``framework.bench`` and
``new-plugin`` runs ``framework.scaffold``. Each command is imported only when it is called.
"""
from __future__ import annotations

import os
import sys

USAGE = """usage: archlab <command> [args]

commands:
  train [hydra overrides]   train a model (default: gpt on shakespeare); -m for sweeps
  generate ckpt=PATH [prompt=TEXT max_new_tokens=N temperature=T top_k=K top_p=P seed=S
                     num_beams=N length_penalty=A ids="5 3 9"]   (beams/ids: encoder-decoder checkpoints)
  eval ckpt=PATH [batches=N data=OPTION data.FIELD=V json=true]
                            val loss / ppl / bits per byte of a checkpoint (quantized ones too) on its data
  quantize ckpt=PATH quantization=METHOD [quantization.FIELD=V out=PATH overwrite=true eval=false]
                            post-training quantization (conf/quantization/): writes <ckpt>.<method>.ckpt + .json
  plugins                   list architecture plugins (and broken ones, with their errors)
  bench <name>              run a benchmark: decoder | encoders | infer | mixers | moe | sparse | rnn | overhead
  new-plugin NAME [--dir DIR]  write a new, installable plugin package (see docs/plugins.md)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        from .train import run_train

        return run_train(rest)
    if command == "plugins":
        from .plugins import print_plugins

        return print_plugins(rest)
    if command == "generate":
        from .generate import run_generate

        return run_generate(rest)
    if command == "eval":
        from .eval import run_eval

        return run_eval(rest)
    if command == "quantize":
        from .quantize import run_quantize

        return run_quantize(rest)
    if command == "bench":
        from ..bench import run_bench

        return run_bench(rest)
    if command == "new-plugin":
        from ..scaffold import run_new_plugin

        return run_new_plugin(rest)
    print(f"archlab: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
