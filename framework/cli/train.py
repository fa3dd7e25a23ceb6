"""``archlab train``: the Hydra entry point around ``framework.train.train``."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from . import sweep
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


def _check_run_dirs(overrides: list[str]) -> str | None:
    """``hydra.run.dir`` / ``hydra.sweep.dir`` must be creatable: Hydra makes them before any of our checks run."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key in ("hydra.run.dir", "hydra.sweep.dir") and "$" not in value:
            path = Path(value).expanduser().absolute()
            existing = next(p for p in (path, *path.parents) if p.exists())
            if not existing.is_dir():
                return f"{key}: {existing} is a file, so {path} cannot be a run directory"
            if not os.access(existing, os.W_OK):
                return f"{key}: {existing} is not writable, so {path} cannot be created"
    return None


def run_train(argv: list[str]) -> int:
    overrides = [a for a in argv if not a.startswith("-")]
    problem = _check_model_choice(overrides) or _check_run_dirs(overrides)
    if problem:
        print(f"archlab train: error: {problem}", file=sys.stderr)
        return 2
    register_search_path()
    multirun = "-m" in argv or "--multirun" in argv
    if multirun:  # every job's config checked before the first job starts
        jobs = sweep.sweep_jobs(overrides)
        problems = sweep.check_jobs(jobs) if jobs is not None else []
        if problems:
            print(f"archlab train: error: {len(problems)} of {len(jobs)} sweep jobs have a bad config; "
                  "no job was started:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 2
        sweep.RESULTS.clear()
    sys.argv = [sys.argv[0]] + argv
    _hydra_main()
    if multirun:
        print(sweep.summary())
        return 1 if any(r.status != "ok" for r in sweep.RESULTS) else 0
    return 0


@hydra.main(config_path="pkg://conf", config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from ..data.errors import DataConfigError
    from ..lit_module import NonFiniteError
    from ..train import train

    # Hydra's handlers (console + <run>/train.log) already catch Lightning's messages: drop its own.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()

    hydra_cfg = HydraConfig.get()
    job = (hydra_cfg.job.num, list(hydra_cfg.overrides.task)) if hydra_cfg.mode == RunMode.MULTIRUN else None
    try:
        result = train(cfg)
    except (ConfigError, DataConfigError) as err:  # a bad setting: which, and what is allowed; no stack trace
        print(f"archlab train: error: {err}", file=sys.stderr)
        if job is None:
            raise SystemExit(2) from None
        sweep.record_failure(*job, "config error", err)
        return None
    except NonFiniteError as err:  # diverged: the W&B run is marked failed, the last good checkpoint kept
        print(f"archlab train: diverged: {err}", file=sys.stderr)
        if job is None:
            raise SystemExit(3) from None
        sweep.record_failure(*job, "diverged", err)
        return None
    except Exception as err:  # a sweep outlives one job's crash (out of memory, a bug): recorded, the rest run
        if job is None:
            raise
        log.exception("sweep job %d failed", job[0])
        sweep.record_failure(*job, "failed", err)
        return None
    val_loss = result["metrics"].get("val/loss")
    if job is not None:
        sweep.RESULTS.append(sweep.JobResult(*job, "ok", val_loss))
    return val_loss
