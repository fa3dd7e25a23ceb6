"""Loggers from the `logger` config group, with sweep grouping for W&B under Hydra multirun."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from .library_noise import quiet_wandb_logger


def sweep_identity() -> tuple[str | None, list[str]]:
    """(group, tags) naming the current Hydra sweep; (None, []) outside a multirun."""
    if not HydraConfig.initialized():
        return None, []
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None, []
    sweep = Path(str(hydra_cfg.sweep.dir)).name
    group = f"{hydra_cfg.job.name}-{sweep}"
    # W&B caps a tag at 64 characters.
    tags = [f"sweep:{sweep}"] + [str(o)[:64] for o in hydra_cfg.overrides.task]
    return group, tags


def build_loggers(cfg: DictConfig, wandb_run_id: str | None = None) -> list[Logger]:
    """The configured loggers; ``wandb_run_id`` (from a checkpoint being resumed) continues that W&B run."""
    loggers: list[Logger] = []
    group, sweep_tags = sweep_identity()
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if logger_cfg is None or "_target_" not in logger_cfg:
            continue
        overrides: dict[str, Any] = {}
        if "wandb" in str(logger_cfg._target_).lower():
            if group and not logger_cfg.get("group"):
                overrides["group"] = group
            overrides["tags"] = list(logger_cfg.get("tags") or []) + sweep_tags
            if wandb_run_id:
                overrides.update(id=wandb_run_id, resume="allow")
        loggers.append(instantiate(logger_cfg, **overrides))
        quiet_wandb_logger(loggers[-1])
    return loggers


def log_config(loggers: list[Logger], cfg: DictConfig, extra: dict[str, Any]) -> None:
    """Every logger records the full resolved config (plus e.g. the parameter count)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.update(extra)
    for logger in loggers:
        logger.log_hyperparams(resolved)


def finish_loggers(loggers: list[Logger], failed: bool = False) -> None:
    """Close W&B runs (under Hydra's basic launcher all sweep jobs share one process); a failed run is
    recorded with exit code 1, so W&B shows it as failed."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish(exit_code=1 if failed else 0)
