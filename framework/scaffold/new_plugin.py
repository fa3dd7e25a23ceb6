"""``archlab new-plugin NAME [--dir DIR]``: write a complete, installable plugin package.

Everything is checked before anything is written; the files go to a temporary sibling folder that is
renamed into place at the end, so a refusal or a crash never leaves a half-written plugin behind.
"""
from __future__ import annotations

import argparse
import keyword
import os
import re
import shutil
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

from .templates import files, preset_names

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_NAME_LENGTH = 40
# Names that would read as (or shadow) archlab's own parts, config groups or core libraries.
RESERVED = frozenset({
    "archlab", "framework", "plugins", "plugin", "conf", "config", "model", "models", "data", "test", "tests",
    "train", "generate", "bench", "new_plugin", "torch", "lightning", "hydra", "wandb", "none", "null",
    "true", "false",
})


class ScaffoldError(ValueError):
    """The request cannot be honoured; the message says why and what to do instead."""


def check_name(name: str) -> None:
    """Raise ScaffoldError unless ``name`` can be a new plugin (and its preset) name."""
    if not NAME_PATTERN.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use lowercase letters, digits and underscores, starting with a letter "
            f"(at most {MAX_NAME_LENGTH} characters), e.g. 'mynet' or 'hyena_lm'"
        )
    if keyword.iskeyword(name) or name in RESERVED:
        raise ScaffoldError(f"invalid plugin name {name!r}: it is reserved; pick another")
    from ..hydra_search_path import model_options
    from ..registry import refresh

    found = refresh()  # what is installed now, not what this process saw first
    options = model_options()
    for option in preset_names(name):
        if option in found.plugins or option in found.errors:
            raise ScaffoldError(f"plugin name {option!r} is already taken by an installed plugin "
                                f"({found.sources.get(option, 'broken')}); pick another")
        if option in options:
            raise ScaffoldError(f"model={option} already exists (offered by plugin {options[option]!r}); pick another")
    from ..mixers.registry import discover_mixers

    mixers = discover_mixers()  # refreshed above: the new package registers a mixer of the same name
    if name in mixers.mixers or name in mixers.errors:
        raise ScaffoldError(f"a mixer named {name!r} is already installed (archlab plugins lists them); pick another")
    if find_spec(f"archlab_{name}") is not None:
        raise ScaffoldError(f"a module archlab_{name} is already importable; pick another name")


def check_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise ScaffoldError(f"{target} exists and is not a folder; nothing was written")
    if target.is_dir() and any(target.iterdir()):
        raise ScaffoldError(f"{target} exists and is not empty; nothing was written (choose another --dir)")


def new_plugin(name: str, target: str | Path | None = None) -> Path:
    """Write plugin ``name`` into ``target`` (default ./archlab-<name>); returns the folder."""
    check_name(name)
    target = Path(target if target is not None else f"archlab-{name.replace('_', '-')}").resolve()
    check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for rel, text in files(name).items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        check_target(target)  # still free (nothing appeared while writing)
        if target.is_dir():
            target.rmdir()  # empty: replaced by the staged folder
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


NEXT_STEPS = """\
wrote plugin {name!r} to {target}
next steps:
  pip install -e {target}
      registers the entry point archlab.plugins:{name}
      and the mixer archlab.mixers:{name}
  archlab plugins
      lists {name}, its preset {name}_hybrid and the mixer {name}
  archlab train model={name} data=synthetic
  archlab train -m model={name} model.ffn=mlp,swiglu data=synthetic
      a sweep over one of its options (one W&B run per job)
  archlab train model=gpt 'model.layers=[attention,{name}]'
      the mixer in any stack
  pytest {target}
      the contract kit and the plugin's own tests
guide: docs/plugins.md in the archlab repository"""


def run_new_plugin(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="archlab new-plugin",
        description="Write a complete, installable archlab plugin package (a token mixer, the stack plugin using it, "
                    "metrics, presets, tests).",
    )
    parser.add_argument("name", help="plugin name: model=NAME and the metric prefix (lowercase identifier)")
    parser.add_argument("--dir", default=None, help="folder to create (must not exist or be empty; default ./archlab-NAME)")
    args = parser.parse_args(argv)
    try:
        target = new_plugin(args.name, args.dir)
    except ScaffoldError as err:
        print(f"archlab new-plugin: error: {err}", file=sys.stderr)
        return 2
    print(NEXT_STEPS.format(name=args.name, target=target))
    return 0
