"""``train(cfg)``: a plain function from a composed config to a trained, logged, checkpointed model.

The Hydra entry point in ``framework/cli/train.py`` is a thin wrapper around it, so tests call it directly.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .capabilities import Generates
from .config_schema import ConfigError
from .cpu_memory import retain_freed_memory
from .data.build import build_datamodule
from .lit_module import ArchitectureModule
from .loggers import build_loggers, finish_loggers, log_config
from .registry import get_plugin, make_config

log = logging.getLogger("archlab")


def split_model_config(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """(plugin name, validated-able config dict) from ``cfg.model``."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    plugin_name = model_cfg.pop("plugin", None)
    if plugin_name is None:
        raise ConfigError("model.plugin: missing; every model config names the plugin that builds it")
    return plugin_name, model_cfg


def _check_moved_keys(plugin: Any, model_cfg: dict[str, Any]) -> None:
    """Model options the core took over get a message saying where they went, not just "unknown key"."""
    fields = {f.name for f in dataclasses.fields(plugin.config_class)}
    if "label_smoothing" in model_cfg and "label_smoothing" not in fields:
        raise ConfigError("model.label_smoothing: label smoothing is a core loss option now; remove it from the "
                          "model config and set loss.label_smoothing=<epsilon> (e.g. loss.label_smoothing=0.1)")


def label_smoothing(cfg: DictConfig) -> float:
    """``loss.label_smoothing``: epsilon of F.cross_entropy's label smoothing in the training loss."""
    value = (cfg.get("loss") or {}).get("label_smoothing", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"loss.label_smoothing: must be a float in [0, 1), got {value!r}")
    return float(value)


def _resume_path(cfg: DictConfig) -> str | None:
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            raise ConfigError(f"ckpt_path: no checkpoint at {path}")
        return str(path)
    if cfg.get("resume"):
        path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise ConfigError(
                f"resume: no {path}; run with the original run's directory (hydra.run.dir=...) or set ckpt_path"
            )
        return str(path)
    return None


def _optimization(cfg: DictConfig) -> tuple[Any, Any]:
    """Optimizer and scheduler factories, tried once on a dummy parameter so bad values fail now."""
    optimizer = instantiate(cfg.optimizer)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    try:
        probe = optimizer([torch.nn.Parameter(torch.zeros(1))])
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(f"optimizer: {err}") from err
    precision, clip = str(cfg.trainer.get("precision", "32")), cfg.trainer.get("gradient_clip_val")
    if probe.defaults.get("fused") and precision in ("16", "16-mixed") and clip:
        # Lightning would raise this at the first clipped step, after the run's files were set up.
        raise ConfigError(
            "optimizer.fused: a fused optimizer unscales fp16 gradients itself, so Lightning cannot clip them "
            f"(trainer.precision={precision}, trainer.gradient_clip_val={clip}); set optimizer.fused=false, "
            "trainer.gradient_clip_val=null or trainer.precision=bf16-mixed")
    if scheduler is not None:
        try:
            scheduler(probe, total_steps=max(1, int(cfg.trainer.get("max_steps", 1))))
        except TypeError as err:
            raise ConfigError(f"scheduler: {err}") from err
    return optimizer, scheduler


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data``; returns final metrics, checkpoint paths and a sample."""
    # Everything that can be wrong with the config fails here, before any file is written.
    plugin_name, model_cfg = split_model_config(cfg)
    plugin = get_plugin(plugin_name)
    _check_moved_keys(plugin, model_cfg)
    make_config(plugin_name, **model_cfg)
    smoothing = label_smoothing(cfg)
    resume_from = _resume_path(cfg)
    L.seed_everything(cfg.seed, workers=True)
    retain_freed_memory()  # CPU steps reuse freed activation memory instead of page-faulting fresh pages
    datamodule = build_datamodule(cfg.data, objective=plugin.objective)
    optimizer, scheduler = _optimization(cfg)
    module = ArchitectureModule(
        plugin_name,
        model_cfg,
        optimizer=optimizer,
        scheduler=scheduler,
        plugin_metrics_every_n_steps=cfg.get("plugin_metrics_every_n_steps", 0),
        attention_stats=cfg.get("attention_stats", True),
        label_smoothing=smoothing,
    )
    if cfg.get("compile"):
        module.model = torch.compile(module.model)
    n_params = sum(p.numel() for p in module.model.parameters())
    log.info("model %s (%s): %.2fM parameters", plugin_name, plugin.description, n_params / 1e6)

    loggers = build_loggers(cfg)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    callbacks += _progress_bar(cfg, callbacks)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    try:
        log_config(loggers, cfg, {"model_params": n_params})
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        _save_final_checkpoint(trainer)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        checkpoint = trainer.checkpoint_callback
        result: dict[str, Any] = {
            "metrics": metrics,
            "best_checkpoint": getattr(checkpoint, "best_model_path", None) or None,
            "last_checkpoint": getattr(checkpoint, "last_model_path", None) or None,
            "output_dir": str(cfg.paths.output_dir),
            "sample": _sample(module.model, datamodule, cfg),
        }
        if result["sample"] is not None:
            log.info("sample:\n%s", result["sample"])
            for logger in loggers:
                if hasattr(logger, "log_text"):
                    logger.log_text(key="samples", columns=["text"], data=[[result["sample"]]])
        return result
    finally:
        finish_loggers(loggers)


def _progress_bar(cfg: DictConfig, callbacks: list[Any]) -> list[Any]:
    """A bar redrawn every ``progress_bar_refresh_rate`` steps. Lightning's default (a Rich bar when rich is
    installed) redraws every step, ~3 ms a step on this CPU (``archlab bench overhead`` at d32 L1, one thread:
    67 steps/s with it, 87 without)."""
    from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

    if not cfg.trainer.get("enable_progress_bar", True) or any(isinstance(c, ProgressBar) for c in callbacks):
        return []
    return [TQDMProgressBar(refresh_rate=int(cfg.get("progress_bar_refresh_rate", 10)))]


def _save_final_checkpoint(trainer: L.Trainer) -> None:
    """ModelCheckpoint saves `last` only after validations; make it the true end of training."""
    checkpoint = trainer.checkpoint_callback
    dirpath = getattr(checkpoint, "dirpath", None)
    if dirpath and getattr(checkpoint, "save_last", False):
        path = Path(dirpath) / "last.ckpt"
        trainer.save_checkpoint(path)
        checkpoint.last_model_path = str(path)


def _sample(model: torch.nn.Module, datamodule: Any, cfg: DictConfig) -> str | None:
    sample_cfg = cfg.get("sample") or {}
    prompt = sample_cfg.get("prompt")
    if prompt is None or not isinstance(model, Generates) or not hasattr(datamodule, "encode"):
        return None
    try:
        encoded = datamodule.encode(prompt)
    except ValueError:  # e.g. a text prompt for a synthetic task's vocabulary
        return None
    if not encoded:
        return None
    device = next(model.parameters()).device
    ids = torch.tensor([encoded], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(int(cfg.seed))
    out = model.generate(
        ids,
        max_new_tokens=int(sample_cfg.get("max_new_tokens", 200)),
        temperature=float(sample_cfg.get("temperature", 0.8)),
        top_k=sample_cfg.get("top_k"),
        generator=generator,
    )
    return datamodule.decode(out[0].tolist())
