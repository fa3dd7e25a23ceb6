"""``train(cfg)``: a plain function from a composed config to a trained, logged, checkpointed model.

The Hydra entry point in ``framework/cli/train.py`` is a thin wrapper around it, so tests call it directly.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from .capabilities import Generates
from .checkpoint import read_checkpoint
from .checkpointing import AtomicCheckpointIO, PreemptionCheckpoint, periodic_checkpoint
from .config_schema import ConfigError, check, check_call_values
from .cpu_memory import retain_freed_memory
from .data.build import build_datamodule
from .data.tokenizer import check_checkpoint_tokenizer, tokenizer_hparams
from .distributed import end_job, set_job_config
from .init_weights import initial_model_config, load_initial_weights, weights_only_checkpoint
from .library_noise import quiet_library_noise
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


def max_nonfinite_skips(cfg: DictConfig) -> int:
    """``nonfinite.max_skips``: batches with a non-finite loss or gradient norm to skip before stopping."""
    value = (cfg.get("nonfinite") or {}).get("max_skips", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"nonfinite.max_skips: must be an integer >= 0, got {value!r}")
    return value


PRECISIONS = ("32", "32-true", "64", "64-true", "16", "16-mixed", "bf16", "bf16-mixed", "16-true", "bf16-true",
              "transformer-engine", "transformer-engine-float16")


def check_run_options(cfg: DictConfig) -> None:
    """The seed and the Trainer arguments, checked here rather than by Lightning once ``fit`` has started."""
    seed = cfg.get("seed")
    check(isinstance(seed, int) and not isinstance(seed, bool), "seed", f"must be an integer, got {seed!r}")
    trainer = OmegaConf.to_object(cfg.trainer)
    check_call_values("trainer", L.Trainer, trainer, skip={"logger", "callbacks", "plugins", "precision"})
    clip = trainer.get("gradient_clip_val")
    check(clip is None or (_number(clip) and clip >= 0), "trainer.gradient_clip_val",
          f"must be a number >= 0 or null, got {clip!r}")
    check(trainer.get("gradient_clip_algorithm", "norm") in ("norm", "value"), "trainer.gradient_clip_algorithm",
          f"must be 'norm' or 'value', got {trainer.get('gradient_clip_algorithm')!r}")
    check(str(trainer.get("precision", "32")) in PRECISIONS, "trainer.precision",
          f"must be one of {', '.join(PRECISIONS)}, got {trainer.get('precision')!r}")
    for key, least in (("max_steps", -1), ("log_every_n_steps", 1), ("accumulate_grad_batches", 1),
                       ("num_sanity_val_steps", -1)):
        value = trainer.get(key)
        check(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= least),
              f"trainer.{key}", f"must be an integer >= {least}, got {value!r}")
    check(trainer.get("max_steps", -1) != 0, "trainer.max_steps", "must be >= 1 (or -1: no step limit), got 0")
    for section in ("callbacks", "logger"):  # every node that names a class: its arguments, before it is built
        for name, node in (cfg.get(section) or {}).items():
            if node and "_target_" in node:
                check_call_values(f"{section}.{name}", _target(f"{section}.{name}", node._target_),
                                  OmegaConf.to_object(node))
    bar = cfg.get("progress_bar")
    if bar and "_target_" in bar:
        check_call_values("progress_bar", _target("progress_bar", bar._target_), OmegaConf.to_object(bar))
    interval = trainer.get("val_check_interval")
    check(interval is None or (_number(interval) and interval > 0), "trainer.val_check_interval",
          f"must be a number > 0 (a step count, or a fraction of an epoch), got {interval!r}")


def _target(field: str, path: str) -> Any:
    try:
        return get_object(path)
    except Exception as err:  # noqa: BLE001 - a _target_ that does not import
        raise ConfigError(f"{field}._target_: cannot import {path!r} ({err})") from None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_model_fits_data(config: Any, datamodule: Any) -> None:
    """Combinations of model and data that would fail deep inside the model, or run without meaning."""
    vocab, data_vocab = getattr(config, "vocab_size", None), getattr(datamodule, "vocab_size", None)
    if vocab is not None and data_vocab is not None and vocab < data_vocab:
        raise ConfigError(f"model.vocab_size: {vocab} is smaller than the data's vocabulary (data.vocab_size="
                          f"{data_vocab}): token ids would index past the embedding; leave it at ${{data.vocab_size}}")
    limit = getattr(config, "context_limit", getattr(config, "max_seq_len", None))
    seq_len = getattr(datamodule, "seq_len", None)
    if limit is not None and seq_len is not None and seq_len > limit:
        raise ConfigError(f"data.seq_len: {seq_len} exceeds what the model can see (model.max_seq_len={limit}); "
                          f"set model.max_seq_len>={seq_len} or data.seq_len<={limit}")
    order = getattr(datamodule, "order", None)
    if getattr(config, "stateful", False) and order != "contiguous":
        raise ConfigError(f"model.stateful: carries the recurrent state from one batch to the next, which means "
                          f"something only when row i of a batch continues row i of the one before: set "
                          f"data.order=contiguous (got {order!r})")


def _refuse_to_clobber(cfg: DictConfig, resume_from: str | None) -> None:
    """A new run never writes over another run's checkpoints."""
    ckpt_dir = Path(str(cfg.paths.output_dir)) / "checkpoints"
    existing = sorted(p.name for p in ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []
    if existing and resume_from is None and not cfg.get("overwrite", False):
        raise ConfigError(
            f"paths.output_dir: {ckpt_dir} already holds a run's checkpoints ({', '.join(existing[:3])}"
            f"{', ...' if len(existing) > 3 else ''}); resume it with resume=true, start elsewhere "
            "(hydra.run.dir=...), or write over it with overwrite=true")


def checkpoint_schedule(cfg: DictConfig) -> tuple[int | None, float | None]:
    """``checkpoint.every_n_steps`` / ``checkpoint.every_n_minutes``: extra ``last.ckpt`` saves (None: off)."""
    section = cfg.get("checkpoint") or {}
    steps, minutes = section.get("every_n_steps"), section.get("every_n_minutes")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ConfigError(f"checkpoint.every_n_steps: must be an integer >= 1 or null, got {steps!r}")
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0):
        raise ConfigError(f"checkpoint.every_n_minutes: must be a number > 0 or null, got {minutes!r}")
    return steps, minutes


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


def _check_resumable(cfg: DictConfig, path: str, plugin_name: str, model_cfg: dict[str, Any],
                     datamodule: Any = None) -> str | None:
    """The checkpoint to resume must be archlab's, of this plugin, with weights this run's model config can hold
    (other settings, e.g. dropout, may change); returns the W&B run it was written by. Memory-mapped and checked
    against a model built on the meta device: no tensor is read or allocated here."""
    field = "ckpt_path" if cfg.get("ckpt_path") else "resume"
    ckpt = read_checkpoint(path, field, mmap=True)
    saved_plugin, saved = ckpt["hyper_parameters"]["plugin_name"], ckpt["hyper_parameters"]["model_config"]
    if "archlab_quantization" in ckpt:
        raise ConfigError(f"{field}: {path} is a quantized checkpoint (archlab quantize, or converted at the end of "
                          "quantization-aware training); resume from the run's full-precision last.ckpt")
    saved_q = (ckpt["hyper_parameters"].get("quantization") or {}).get("method", "none")
    now_q = (cfg.get("quantization") or {}).get("method", "none")
    if saved_q != now_q:
        raise ConfigError(f"{field}: {path} was trained with quantization={saved_q}, this run has quantization={now_q}; "
                          f"resume with quantization={saved_q}")
    check_checkpoint_tokenizer(ckpt["hyper_parameters"], datamodule, f"the checkpoint {field}={path}")
    if saved_plugin != plugin_name:
        raise ConfigError(f"{field}: {path} is a checkpoint of model plugin {saved_plugin!r}, this run's model is "
                          f"{plugin_name!r}")
    now = make_config(plugin_name, **model_cfg)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in get_plugin(plugin_name).build(now).state_dict().items()}
    found = {k.removeprefix("model."): tuple(v.shape) for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    if expected != found:
        then = make_config(plugin_name, **saved)
        differ = [f"model.{f.name}={getattr(then, f.name)!r} (this run: {getattr(now, f.name)!r})"
                  for f in dataclasses.fields(now) if getattr(now, f.name) != getattr(then, f.name)]
        raise ConfigError(f"{field}: the weights in {path} do not fit this run's model; the checkpoint was trained "
                          f"with {', '.join(differ) if differ else 'the same config by other code'}")
    return ckpt.get("archlab_wandb_run_id")


def _optimization(cfg: DictConfig) -> tuple[Any, Any]:
    """Optimizer and scheduler factories, tried once on a dummy parameter so bad values fail now."""
    for section, skip in (("optimizer", {"params"}), ("scheduler", {"optimizer", "total_steps"})):
        node = cfg.get(section)
        if node and "_target_" in node:
            check_call_values(section, _target(section, node._target_), OmegaConf.to_object(node), skip)
    optimizer = instantiate(cfg.optimizer)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    try:
        probe = optimizer([torch.nn.Parameter(torch.zeros(1))])
    except Exception as err:  # noqa: BLE001 - whatever the optimizer says of its arguments, said before training
        raise ConfigError(f"optimizer: {err}") from None
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


@dataclass
class Checked:
    """What ``check_config`` established about a config, everything ``train`` needs to start."""

    plugin_name: str
    model_cfg: dict[str, Any]
    plugin: Any
    label_smoothing: float
    max_nonfinite_skips: int
    checkpoint_every: tuple[int | None, float | None]
    resume_from: str | None
    wandb_run_id: str | None  # the W&B run the resumed checkpoint was written by
    datamodule: Any
    optimizer: Any
    scheduler: Any
    quantization: Any  # QuantizationConfig, or None without quantization-aware training
    init_from: str | None = None  # a weights-only checkpoint the new run starts from (ckpt_path=, archlab import)


def check_config(cfg: DictConfig, output_dir_exists: bool = True) -> Checked:
    """Everything that can be wrong with a config, checked before any file is written: each problem a
    ConfigError naming the field. ``output_dir_exists=False`` (a sweep's jobs, checked before the first
    starts) skips the checks of the run directory, which does not exist yet."""
    plugin_name, model_cfg = split_model_config(cfg)
    initial = weights_only_checkpoint(cfg)  # fine-tuning: the model is the checkpoint's
    if initial is not None:
        plugin_name, model_cfg = initial_model_config(cfg, initial)
    plugin = get_plugin(plugin_name)
    _check_moved_keys(plugin, model_cfg)
    # The data first: model options often follow it (max_seq_len: ${data.seq_len}), so its errors are the cause.
    datamodule = build_datamodule(cfg.data, objective=plugin.objective)
    if initial is not None:  # fine-tuning: the data must be tokenized as the weights were trained
        check_checkpoint_tokenizer(initial["hyper_parameters"], datamodule, f"the checkpoint ckpt_path={cfg.ckpt_path}")
    config = make_config(plugin_name, **model_cfg)
    check_run_options(cfg)
    checked = dict(label_smoothing=label_smoothing(cfg), max_nonfinite_skips=max_nonfinite_skips(cfg),
                   checkpoint_every=checkpoint_schedule(cfg))
    resume_from = _resume_path(cfg) if output_dir_exists and initial is None else None
    wandb_run_id = _check_resumable(cfg, resume_from, plugin_name, model_cfg, datamodule) if resume_from else None
    if output_dir_exists:
        _refuse_to_clobber(cfg, resume_from)
    _check_model_fits_data(config, datamodule)
    optimizer, scheduler = _optimization(cfg)
    quantization = training_quantization(cfg, config)
    return Checked(plugin_name, model_cfg, plugin, resume_from=resume_from, wandb_run_id=wandb_run_id, datamodule=datamodule,
                   optimizer=optimizer, scheduler=scheduler, quantization=quantization,
                   init_from=str(cfg.ckpt_path) if initial is not None else None, **checked)


def training_quantization(cfg: DictConfig, config: Any) -> Any:
    """``cfg.quantization`` for training: None (method none), or a QAT method's config, checked against the model
    (group sizes) on the meta device; a post-training method is refused with where it belongs."""
    section = cfg.get("quantization")
    if not section or section.get("method", "none") == "none":
        return None
    from .quantization import plan, quantization_config

    quantization = quantization_config(OmegaConf.to_container(section, resolve=True))
    if quantization.spec.kind != "qat":
        raise ConfigError(f"quantization: {quantization.method!r} is a post-training method: quantize the trained "
                          f"checkpoint with `archlab quantize ckpt=<run>/checkpoints/last.ckpt "
                          f"quantization={quantization.method}`; training with fake quantization takes "
                          "quantization=qat_int4_weight_only or quantization=qat_int8_dynamic_int4_weight")
    with torch.device("meta"):
        plan(get_plugin(split_model_config(cfg)[0]).build(config), quantization)  # group sizes fit every layer
    return quantization


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.data``; returns final metrics, checkpoint paths and a sample."""
    quiet_library_noise()  # Lightning's advertisement and deprecation notices are not about this run
    checked = check_config(cfg)  # everything that can be wrong with the config fails here
    plugin_name, model_cfg, plugin = checked.plugin_name, checked.model_cfg, checked.plugin
    resume_from, datamodule = checked.resume_from, checked.datamodule
    L.seed_everything(cfg.seed, workers=True)
    retain_freed_memory()  # CPU steps reuse freed activation memory instead of page-faulting fresh pages
    module = ArchitectureModule(
        plugin_name,
        model_cfg,
        optimizer=checked.optimizer,
        scheduler=checked.scheduler,
        plugin_metrics_every_n_steps=cfg.get("plugin_metrics_every_n_steps", 0),
        attention_stats=cfg.get("attention_stats", True),
        label_smoothing=checked.label_smoothing,
        max_nonfinite_skips=checked.max_nonfinite_skips,
        data_config=OmegaConf.to_container(cfg.data, resolve=True),
        tokenizer=tokenizer_hparams(datamodule),
    )
    if checked.init_from:
        load_initial_weights(module.model, checked.init_from)
    if checked.quantization is not None:
        module.hparams["quantization"] = checked.quantization.to_dict()  # recorded: a resume must use the same
    if cfg.get("compile"):
        module.model = torch.compile(module.model)
    n_params = sum(p.numel() for p in module.model.parameters())
    log.info("model %s (%s): %.2fM parameters", plugin_name, plugin.description, n_params / 1e6)

    loggers = build_loggers(cfg, wandb_run_id=checked.wandb_run_id)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    callbacks += _progress_bar(cfg, callbacks)
    ckpt_dir = str(Path(str(cfg.paths.output_dir)) / "checkpoints")
    callbacks += [PreemptionCheckpoint(ckpt_dir), *periodic_checkpoint(ckpt_dir, *checked.checkpoint_every)]
    qat = None
    if checked.quantization is not None:
        from .quantization import QuantizationAwareTraining

        qat = QuantizationAwareTraining(checked.quantization, ckpt_dir)
        callbacks.append(qat)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks,
                                     plugins=[AtomicCheckpointIO()])
    set_job_config(trainer.strategy, cfg)  # DDP/FSDP: the other ranks train this job's config, not sys.argv
    failed = True  # until fit and the sample are done: W&B marks the run failed otherwise
    try:
        log_config(loggers, cfg, {"model_params": n_params})
        # weights_only: a checkpoint holds tensors and plain values only (no pickled code runs on resume).
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        _save_final_checkpoint(trainer)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        metrics["model/params"] = float(n_params)  # a search objective too (hparams_search=optuna_multi)
        checkpoint = trainer.checkpoint_callback
        result: dict[str, Any] = {
            "metrics": metrics,
            "best_checkpoint": getattr(checkpoint, "best_model_path", None) or None,
            "last_checkpoint": getattr(checkpoint, "last_model_path", None) or None,
            "output_dir": str(cfg.paths.output_dir),
            # rank 0 samples; an FSDP-sharded model cannot generate on one rank (archlab generate ckpt=... can)
            "sample": _sample(module.model, datamodule, cfg)
            if trainer.is_global_zero and not getattr(module, "_sharded", False) else None,
            "quantized_checkpoint": str(qat.converted_path) if qat is not None and qat.converted_path else None,
        }
        if result["sample"] is not None:
            log.info("sample:\n%s", result["sample"])
            for logger in loggers:
                if hasattr(logger, "log_text"):
                    logger.log_text(key="samples", columns=["text"], data=[[result["sample"]]])
        failed = False
        return result
    finally:
        finish_loggers(loggers, failed=failed)
        end_job(trainer.strategy)  # DDP/FSDP: the other ranks exit; this process can run the next job


def _progress_bar(cfg: DictConfig, callbacks: list[Any]) -> list[Any]:
    """``cfg.progress_bar`` (framework/progress_bar.py), redrawn every ``progress_bar_refresh_rate`` steps.
    Lightning's default (a Rich bar when rich is installed, ``progress_bar=null``) redraws every step, ~3 ms a step
    on this CPU (``archlab bench overhead`` at d32 L1, one thread: 67 steps/s with it, 87 without)."""
    from lightning.pytorch.callbacks import ProgressBar

    if not cfg.trainer.get("enable_progress_bar", True) or any(isinstance(c, ProgressBar) for c in callbacks):
        return []
    return [instantiate(cfg.progress_bar)] if cfg.get("progress_bar") else []


def _save_final_checkpoint(trainer: L.Trainer) -> None:
    """ModelCheckpoint saves `last` only after validations; make it the true end of training."""
    checkpoint = trainer.checkpoint_callback
    dirpath = getattr(checkpoint, "dirpath", None)
    if dirpath and getattr(checkpoint, "save_last", False):
        path = Path(dirpath) / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # the full state, resumable (Lightning asks to say so)
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
