"""``archlab train``: the Hydra entry point around ``framework.train.train``."""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from ..config_schema import ConfigError
from ..hydra_search_path import model_options, register_search_path
from ..registry import plugin_errors

log = logging.getLogger("archlab")


def _check_model_choice(overrides: list[str]) -> str | None:
    """Fail before Hydra starts when ``model=`` names nothing installed; list what is."""
    options = model_options()
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key.lstrip("+~") == "model":
            for choice in value.split(","):
                choice = choice.strip()
                if choice and choice not in options:
                    broken = plugin_errors()
                    msg = f"model={choice}: no such model; available: {', '.join(sorted(options))}"
                    if choice in broken:
                        msg += f"\n  plugin {choice!r} is installed but broken: {broken[choice]}"
                    return msg
    return None


def run_train(argv: list[str]) -> int:
    problem = _check_model_choice([a for a in argv if not a.startswith("-")])
    if problem:
        print(f"archlab train: error: {problem}", file=sys.stderr)
        return 2
    register_search_path()
    sys.argv = [sys.argv[0]] + argv
    _hydra_main()
    return 0


@hydra.main(config_path="pkg://conf", config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from ..data.errors import DataConfigError
    from ..train import train

    # Hydra's handlers (console + <run>/train.log) already catch Lightning's messages: drop its own.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()

    try:
        result = train(cfg)
    except (ConfigError, DataConfigError) as err:
        # A bad setting: say which and what is allowed, no stack trace (exits the whole sweep).
        print(f"archlab train: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return result["metrics"].get("val/loss")
