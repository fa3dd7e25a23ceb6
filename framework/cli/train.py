"""``archlab train``: the Hydra entry point around ``framework.train.train``."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from . import sweep, sweep_results
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
    if multirun:  # every job's config (or, under a sweeper that picks jobs as it goes, every value) checked first
        plan = sweep.plan(overrides)
        problems = sweep.check_jobs(plan.jobs)
        if problems:
            what = "sweep jobs" if plan.complete else "probe configs (each search value on its own)"
            print(f"archlab train: error: {len(problems)} of {len(plan.jobs)} {what} have a bad config; "
                  "no job was started:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 2
        sweep_results.CURRENT.clear()
    sys.argv = [sys.argv[0]] + argv
    if not multirun:
        _hydra_main()
        return 0
    try:
        _hydra_main()
        ended = None
    except SystemExit as exit_:  # the sweep itself stopped (a job's process died under submitit, a sweeper error):
        ended = exit_.code        # Hydra said why; the table still shows what the jobs that ran left
    results = sweep_results.collect(plan.expected)
    print(sweep_results.summary(results))
    return 1 if ended not in (None, 0) or any(r.status != "ok" for r in results) else 0


def _objective(cfg: DictConfig, metrics: dict[str, float]) -> float | list[float] | None:
    """``cfg.objective`` read from a run's final metrics: one float, or a list for multi-objective sweepers."""
    names = cfg.get("objective", "val/loss")  # conf/train.yaml holds the default
    if isinstance(names, str):
        return metrics.get(names)
    missing = [n for n in names if n not in metrics]
    if missing:
        log.warning("objective: %s not among the run's metrics (%s)", ", ".join(missing), ", ".join(sorted(metrics)))
        return None
    return [metrics[n] for n in names]


def _job_threads(launcher: DictConfig | None) -> None:
    """Torch's threads in a sweep job: the launcher's ``cpus_per_task`` (submitit), else OMP_NUM_THREADS (joblib's
    workers get cores / n_jobs from loky). Applied here because torch may be imported before either is set."""
    threads = (launcher or {}).get("cpus_per_task") or os.environ.get("OMP_NUM_THREADS", "")
    if str(threads).isdigit() and int(threads) > 0:
        import torch

        torch.set_num_threads(int(threads))


@hydra.main(config_path="pkg://conf", config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | list[float] | None:
    from .. import checkpointing
    from ..data.errors import DataConfigError
    from ..lit_module import NonFiniteError
    from ..train import train

    # Hydra's handlers (console + <run>/train.log) take Lightning's messages: drop its own handlers, and let the
    # loggers it made non-propagating at import (before Hydra's set-up) reach them.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True

    hydra_cfg = HydraConfig.get()
    job = (hydra_cfg.job.num, list(hydra_cfg.overrides.task)) if hydra_cfg.mode == RunMode.MULTIRUN else None
    output_dir = hydra_cfg.runtime.output_dir
    if job is not None:
        _job_threads(hydra_cfg.get("launcher"))

    def failed(status: str, err: BaseException) -> None:  # None: an Optuna trial counts as failed, the study goes on
        sweep_results.record(sweep_results.JobResult(*job, status, error=f"{type(err).__name__}: {err}"), output_dir)

    if job is not None and sweep_results.was_requeued(output_dir):  # pre-empted under submitit, started again
        with open_dict(cfg):
            cfg.resume = True
    try:
        result = train(cfg)
    except (ConfigError, DataConfigError) as err:  # a bad setting: which, and what is allowed; no stack trace
        print(f"archlab train: error: {err}", file=sys.stderr)
        if job is None:
            raise SystemExit(2) from None
        return failed("config error", err)
    except NonFiniteError as err:  # diverged: the W&B run is marked failed, the last good checkpoint kept
        print(f"archlab train: diverged: {err}", file=sys.stderr)
        if job is None:
            raise SystemExit(3) from None
        return failed("diverged", err)
    except Exception as err:  # a sweep outlives one job's crash (out of memory, a bug): recorded, the rest run
        if job is None:
            raise
        log.exception("sweep job %d failed", job[0])
        return failed("failed", err)
    val_loss = result["metrics"].get("val/loss")
    if job is not None:
        requeued = checkpointing.requeue_pending()
        sweep_results.record(sweep_results.JobResult(*job, "requeued" if requeued else "ok", val_loss), output_dir)
    checkpointing.hand_on_requeue_signal()  # pre-empted under submitit: requeued (no return), then resume=true
    return _objective(cfg, result["metrics"])
