"""The ``archlab`` command: train | generate | eval | quantize | export | import | plugins | bench | new-plugin.

One module per command (``train``, ``generate``, ``plugins``); ``bench`` runs ``framework.bench`` and
``new-plugin`` runs ``framework.scaffold``. Each command is imported only when it is called.
"""
from __future__ import annotations

import importlib
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
  export ckpt=PATH format=hf|safetensors out=DIR [overwrite=true]
                            a Hugging Face folder (config.json + model.safetensors) or the bare state dict
  import hf=DIR out=PATH [max_seq_len=N overwrite=true]
                            a local Hugging Face folder -> an archlab checkpoint (generate, eval, train ckpt_path=)
  plugins                   list architecture plugins (and broken ones, with their errors)
  bench <name>              run a benchmark: decoder | encoders | infer | mixers | moe | sparse | rnn | overhead
  new-plugin NAME [--dir DIR]  write a new, installable plugin package (see docs/plugins.md)
  report DIR... [--out DIR] [--metric KEY ...]
                            table (Markdown + CSV) and plots of the W&B runs under run/sweep dirs
  dashboard --project P [--entity E] [--name N] [--dry-run]
                            create the lab's W&B workspace (offline: print its sections and keys)
"""


# command -> (module under framework, function taking the remaining argv, returning an exit code)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("cli.train", "run_train"),
    "plugins": ("cli.plugins", "print_plugins"),
    "generate": ("cli.generate", "run_generate"),
    "eval": ("cli.eval", "run_eval"),
    "quantize": ("cli.quantize", "run_quantize"),
    "export": ("cli.export", "run_export"),
    "import": ("cli.import_hf", "run_import"),
    "bench": ("bench", "run_bench"),
    "new-plugin": ("scaffold", "run_new_plugin"),
    "report": ("cli.report", "run_report"),
    "dashboard": ("cli.dashboard", "run_dashboard"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"archlab: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module, function = COMMANDS[command]
    return getattr(importlib.import_module(f"framework.{module}"), function)(rest)
