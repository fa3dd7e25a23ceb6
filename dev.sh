#!/usr/bin/env bash
# One entry point for set-up + the two quick-start commands:
#   bash dev.sh train [hydra overrides]   # trains the default model (gpt on shakespeare)
#   bash dev.sh test  [pytest args]       # runs the test suite
#   bash dev.sh <archlab subcommand> ...  # e.g. plugins, generate, bench
# Creates or reuses .venv at the repository root; installs torch 2.13.0 first so no
# dependency can pull a CUDA build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=.venv
want=$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.archlab-installed" 2>/dev/null)" != "$want" ]; then
  echo "[dev.sh] setting up $VENV (torch 2.13.0 first, then archlab[dev])" >&2
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  quiet() { { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2; }  # local-index noise
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | quiet
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]" 2>&1 | quiet
  echo "$want" > "$VENV/.archlab-installed"
fi
export WANDB_MODE="${WANDB_MODE:-offline}"
export WANDB_SILENT="${WANDB_SILENT:-true}"
cmd="${1:-train}"; [ $# -gt 0 ] && shift
case "$cmd" in
  test) exec "$VENV/bin/python" -m pytest -x -q -rs "$@" ;;  # -rs: every skip says why in the summary
  *)    exec "$VENV/bin/archlab" "$cmd" "$@" ;;
esac
