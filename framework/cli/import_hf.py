"""``archlab import hf=DIR [out=PATH max_seq_len=N overwrite=true]``: a local Hugging Face folder as an archlab
checkpoint (default ``DIR/archlab.ckpt``) for ``generate``, ``eval data=...`` and ``train ckpt_path=...``.

Nothing is downloaded: ``DIR`` holds ``config.json`` and safetensors weights (``save_pretrained``'s output). The
import is refused with the reason when the model has no exact archlab counterpart, and checked on a probe batch.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..config_schema import ConfigError
from ..data.tokenizer import read_tokenizer_file
from .options import parse_options

_FIELDS = {"hf": str, "out": str, "max_seq_len": int, "overwrite": bool}


def run_import(argv: list[str]) -> int:
    try:
        path, imported = import_folder(argv)
    except ConfigError as err:
        print(f"archlab import: error: {err}", file=sys.stderr)
        return 2
    n_params = sum(p.numel() for p in imported.model.parameters())
    print(f"wrote {path} ({imported.model_type} -> {imported.hparams['plugin_name']}, {n_params / 1e6:.2f}M "
          f"parameters; logits equal Hugging Face's to {imported.probe_difference:.1e} on a probe batch)")
    return 0


def import_folder(argv: list[str]):  # noqa: ANN201 - (Path, Imported)
    from ..interop.hf_import import import_hf, save_imported

    args, _ = parse_options(argv, _FIELDS)
    if "hf" not in args:
        raise ConfigError("hf: required, a local Hugging Face model folder (archlab import hf=<folder>)")
    folder = Path(args["hf"])
    if not folder.is_dir():
        raise ConfigError(f"hf: {folder} is not a folder")
    out = Path(args["out"]) if "out" in args else folder / "archlab.ckpt"
    if out.exists() and not args.get("overwrite", False):  # before the (slow) import
        raise ConfigError(f"out: {out} already exists; pass overwrite=true to replace it, or another out=")
    imported = import_hf(folder, args.get("max_seq_len"))
    extra = {"tokenizer": _tokenizer_record(folder)}
    return save_imported(imported, out, folder, overwrite=args.get("overwrite", False), extra_hparams=extra), imported


def _tokenizer_record(folder: Path) -> dict | None:
    """The folder's ``tokenizer.json`` recorded as a run's tokenizer is (generate, eval, fine-tuning use it); a
    folder without one, or with one that is not byte-level, gets none (bytes) and a note."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        return read_tokenizer_file(str(path)).hparams()
    except ConfigError as err:
        print(f"archlab import: note: {path} not recorded ({str(err).removeprefix('data.tokenizer: ')}); "
              "generate and eval will use byte tokens", file=sys.stderr)
        return None
