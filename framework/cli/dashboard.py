"""``archlab dashboard --project P [--entity E] [--name N] [--dry-run]``: create the lab's W&B workspace (sections
for train, val, perf, attn, moe, rnn and mixer statistics; run comparison) in a project. Offline (WANDB_MODE=offline,
archlab's default) or with --dry-run it prints the sections and their keys and touches no network."""
from __future__ import annotations

import argparse
import os
import sys

from ..report.dashboard import DEFAULT_NAME, build_workspace, config_keys, panel_keys

_NO_NETWORK = ("offline", "dryrun", "disabled")  # WANDB_MODE values under which nothing is sent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="archlab dashboard",
                                     description="create the lab's W&B workspace in a project (docs/report.md)")
    parser.add_argument("--project", required=True, help="the W&B project (archlab's runs log to 'archlab')")
    parser.add_argument("--entity", default=None, help="the W&B user or team (default: your default entity)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"the workspace's name (default: {DEFAULT_NAME})")
    parser.add_argument("--dry-run", action="store_true", help="print the sections and keys; save nothing")
    return parser


def run_dashboard(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed the usage and the problem
        return int(exit_.code or 0)
    mode = os.environ.get("WANDB_MODE", "offline").lower()
    offline = args.dry_run or mode in _NO_NETWORK
    entity = args.entity or ("" if offline else _default_entity())
    if entity is None:
        print("archlab dashboard: error: --entity: none given and W&B has no default entity (wandb login?)",
              file=sys.stderr)
        return 2
    workspace = build_workspace(args.project, entity, args.name)
    if offline:
        why = "--dry-run" if args.dry_run else f"WANDB_MODE={mode}"
        print(f"workspace {args.name!r} for {entity or '<entity>'}/{args.project} (not saved: {why})")
        for section, keys in panel_keys(workspace).items():
            print(f"  {section}: {', '.join(keys)}")
        print(f"  runs grouped by config: {', '.join(config_keys(workspace))}")
        return 0
    try:
        workspace.save()
    except Exception as err:  # noqa: BLE001 - network, auth or server errors: one line, not a traceback
        print(f"archlab dashboard: error: saving to {entity}/{args.project} failed: {type(err).__name__}: {err}",
              file=sys.stderr)
        return 1
    print(f"archlab dashboard: saved {workspace.url}")
    return 0


def _default_entity() -> str | None:
    import wandb

    try:
        return wandb.Api().default_entity
    except Exception:  # noqa: BLE001 - not logged in, or no server: the caller asks for --entity
        return None
