"""Loggers from the `logger` config group, with sweep grouping for W&B under Hydra multirun."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf


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


def build_loggers(cfg: DictConfig) -> list[Logger]:
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
        loggers.append(instantiate(logger_cfg, **overrides))
    return loggers


def log_config(loggers: list[Logger], cfg: DictConfig, extra: dict[str, Any]) -> None:
    """Every logger records the full resolved config (plus e.g. the parameter count)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.update(extra)
    for logger in loggers:
        logger.log_hyperparams(resolved)


def finish_loggers(loggers: list[Logger]) -> None:
    """Close W&B runs: under Hydra's basic launcher all sweep jobs share one process."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
