"""One LightningModule for every plugin: the objective's loss (+ aux_loss), core metrics, plugin metrics,
shared statistics (``framework/shared_stats.py``)."""
from __future__ import annotations


import math
from functools import partial
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanMetric

from .bits_per_byte import BitsPerByte
from .capabilities import CarriesState, HasFigures, HasGradStats, ResetsState, StepsWithOptimizer, takes_predict_mask
from .nn.attention_stats import record_attention_stats
from .optim import param_groups
from .data.loaders import ResumableLoader
from .registry import get_plugin, make_config
from .rng import restore_rng_states, rng_states
from .shared_stats import SharedStats
from .throughput import TokenRate

IGNORE_INDEX = -100


class NonFiniteError(RuntimeError):
    """Training met a non-finite loss or gradient norm (more often than ``nonfinite.max_skips`` allows)."""


def token_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over positions whose label is not IGNORE_INDEX; logits (..., V), labels (...).
    ``label_smoothing`` as in ``F.cross_entropy`` (training only: validation reports the plain NLL)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)



def _flatten(prefix: str, value: Any) -> dict[str, torch.Tensor]:
    if isinstance(value, dict):
        out: dict[str, torch.Tensor] = {}
        for key, sub in value.items():
            out.update(_flatten(f"{prefix}/{key}", sub))
        return out
    return {prefix: value}


class ArchitectureModule(L.LightningModule):
    """Trains any plugin's model. Batches are dicts: model inputs plus ``labels`` aligned with the logits."""

    def __init__(
        self,
        plugin_name: str,
        model_config: dict[str, Any],
        optimizer: partial | None = None,
        scheduler: partial | None = None,
        plugin_metrics_every_n_steps: int = 0,
        attention_stats: bool = True,
        label_smoothing: float = 0.0,
        max_nonfinite_skips: int = 0,
        data_config: dict[str, Any] | None = None,
        tokenizer: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Plain values only, so checkpoints load with weights_only=True and rebuild the model; the data config
        # lets `archlab eval` / `archlab quantize` measure a checkpoint on its own data.
        self.save_hyperparameters("plugin_name", "model_config", "data_config")
        # The tokenizer record (framework/data/tokenizer.py: generate, eval, export read it) is checkpointed but
        # kept out of hparams_initial, which Lightning sends to the loggers: a tokenizer.json can weigh megabytes.
        self.hparams["tokenizer"] = tokenizer
        self.plugin = get_plugin(plugin_name)
        config = make_config(plugin_name, **model_config)
        self.model: nn.Module = self.plugin.build(config)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.plugin_metrics_every_n_steps = plugin_metrics_every_n_steps
        self.attention_stats = attention_stats  # entropy / top-k mass on validation batches
        self.label_smoothing = label_smoothing  # training loss only
        # Batches with a non-finite loss or gradient norm are skipped (no optimizer step) up to this many
        # times; one more stops the run (NonFiniteError) before any non-finite weight exists.
        self.max_nonfinite_skips = max_nonfinite_skips
        self.nonfinite_skips = 0
        self._last_finite: tuple[int, torch.Tensor] | None = None  # (step, loss) of the last finite loss
        self._sparse_prediction = self.plugin.objective == "masked_lm" and takes_predict_mask(self.model)
        self.val_plugin_metrics = nn.ModuleDict(self.plugin.metrics(config))
        self.train_plugin_metrics = nn.ModuleDict(self.plugin.metrics(config))
        self.val_shared, self.train_shared = SharedStats(), SharedStats()
        self.val_loss, self.val_acc, self.val_exact = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_bpb = BitsPerByte()  # when the datamodule knows its tokens' bytes (text): framework/bits_per_byte.py
        self._token_bytes: torch.Tensor | None = None  # (V,) bytes per target id, set at each validation start
        self._token_rate = TokenRate()
        self._rate_step = -1  # the global step whose window was last closed
        self._to_restore: dict[str, Any] | None = None  # from a checkpoint being resumed: RNG and carried states

    # ---- forward and loss -------------------------------------------------------------------
    def forward(self, **inputs: torch.Tensor):
        return self.model(**inputs)

    def _step(self, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if self._sparse_prediction:  # masked LM: the head runs on the ~15% scored positions only
            inputs["predict_mask"] = batch["labels"] != IGNORE_INDEX
        out = self.model(**inputs)
        loss = token_loss(out.logits, out.aligned_labels(batch["labels"]), label_smoothing)
        return out, loss

    def _logs_this_step(self) -> bool:
        """Whether Lightning hands this step's ``self.log`` values to the loggers (every log_every_n_steps,
        counted from 1, as its logger connector does): other steps need not compute or log them."""
        n = self.trainer.log_every_n_steps
        return n > 0 and (self.global_step + 1) % n == 0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        out, loss = self._step(batch, self.label_smoothing)
        aux = out.aux_loss.float()
        if not torch.isfinite(loss + aux):  # one host sync a step: stop before a NaN reaches the weights
            return self._nonfinite("loss", loss + aux)
        self._last_finite = (self.global_step, loss.detach())
        if self._logs_this_step():  # one host sync per logging step, not per step
            self.log("train/loss", loss, prog_bar=True, sync_dist=True)  # the mean over ranks: the global batch's
            if aux.requires_grad or aux.abs().item() > 0:
                self.log("train/aux_loss", aux, sync_dist=True)
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        n = self.plugin_metrics_every_n_steps
        if n and self.global_step % n == 0:
            for metric in self.train_plugin_metrics.values():
                metric.update(out.stats)
            self._log_plugin_metrics(self.train_plugin_metrics, prefix="train/")
            self.train_shared.update(out.stats)
            self._log_values(self.train_shared.compute_and_reset(), prefix="train/")
        return loss + aux

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out, loss = self._step(batch)
        labels = batch["labels"]
        scored = labels != IGNORE_INDEX
        n_scored = scored.sum()
        if n_scored == 0:
            return
        if out.scored is None:
            correct = (out.logits.argmax(-1) == labels) & scored
        else:  # logits (N, V) at out.scored: put the hits back in place
            correct = torch.zeros_like(scored)
            correct[out.scored] = out.logits.argmax(-1) == labels[out.scored]
            correct &= scored
        self.val_loss.update(loss, weight=n_scored)
        if self._token_bytes is not None:
            self.val_bpb.update(loss * n_scored, labels[scored], self._token_bytes)
        self.val_acc.update(correct.sum() / n_scored, weight=n_scored)
        # A sequence is exactly right when every scored position is right.
        rows = scored.any(-1)
        exact = ((correct | ~scored).all(-1) & rows).float().sum() / rows.sum()
        self.val_exact.update(exact, weight=rows.sum())
        for metric in self.val_plugin_metrics.values():
            metric.update(out.stats)
        self.val_shared.update(out.stats)
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._log_histograms(out.stats)

    def on_validation_epoch_end(self) -> None:
        if self.val_loss.weight == 0:  # no validation batch had a scored token
            return
        loss = self.val_loss.compute()
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.log("val/ppl", torch.exp(loss.clamp(max=50)), sync_dist=True)
        self.log("val/acc", self.val_acc.compute(), prog_bar=True, sync_dist=True)
        self.log("val/exact_match", self.val_exact.compute(), sync_dist=True)
        if self.val_bpb.bytes > 0:
            self.log("val/bpb", self.val_bpb.compute().float(), sync_dist=True)
        for metric in (self.val_loss, self.val_acc, self.val_exact, self.val_bpb):
            metric.reset()
        self._log_plugin_metrics(self.val_plugin_metrics, prefix="")
        self._log_values(self.val_shared.compute_and_reset(), prefix="")

    def _key(self, name: str) -> str:
        """Log key of a model-reported value (histogram, figure, gradient statistic): a name with "/" is a full
        key (``moe/load``, ``grad_norm/layer0``), shared by every plugin that reports it; others get ``<plugin>/``."""
        return name if "/" in name else f"{self.plugin.name}/{name}"

    def _log_histograms(self, stats: dict[str, torch.Tensor]) -> None:
        """Stats named ``hist_<name>`` (n_bins,) go to W&B as histogram ``_key(name)`` (bin i = value i),
        e.g. the MoE expert load; other loggers cannot draw one (plugins log scalar summaries too)."""
        hists = {k.removeprefix("hist_"): v for k, v in stats.items() if k.startswith("hist_")}
        loggers = [lg for lg in self.loggers if isinstance(lg, WandbLogger)]
        if not hists or not loggers:
            return
        import numpy as np
        import wandb

        values = {self._key(name): wandb.Histogram(np_histogram=(
            v.detach().float().cpu().numpy(), np.arange(v.numel() + 1))) for name, v in hists.items()}
        for logger in loggers:
            logger.log_metrics(values, step=self.global_step)

    def _log_plugin_metrics(self, metrics: nn.ModuleDict, prefix: str) -> None:
        """A plugin metric's name is its full log key (dict results: ``<name>/<key>``); the core adds only
        ``train/`` on training steps."""
        values: dict[str, torch.Tensor] = {}
        for name, metric in metrics.items():
            if metric.update_count == 0:
                continue
            values.update(_flatten(f"{prefix}{name}", metric.compute()))
            metric.reset()
        self._log_values(values, prefix="")

    def _log_values(self, values: dict[str, torch.Tensor], prefix: str) -> None:
        scalars = {f"{prefix}{k}": v.float() for k, v in values.items() if v.numel() == 1}
        if scalars:
            self.log_dict(scalars, sync_dist=True)

    def _nonfinite(self, what: str, value: torch.Tensor) -> None:
        """Skip this batch (returning None skips Lightning's optimizer step), or stop the run."""
        if self.nonfinite_skips < self.max_nonfinite_skips:
            self.nonfinite_skips += 1
            self.log("train/nonfinite_skips", float(self.nonfinite_skips))
            return None
        last = "no finite loss yet" if self._last_finite is None else \
            f"last finite train loss {float(self._last_finite[1]):.4g} at step {self._last_finite[0]}"
        skipped = f" after skipping {self.nonfinite_skips} batches (nonfinite.max_skips)" if self.nonfinite_skips else ""
        raise NonFiniteError(
            f"the training {what} is {float(value.detach())} at step {self.global_step}{skipped}; {last}. The run stopped "
            "before updating the weights with it, and no checkpoint holds non-finite weights. Lower optimizer.lr, "
            "clip gradients (trainer.gradient_clip_val), or set nonfinite.max_skips=N to skip up to N bad batches")

    def configure_model(self) -> None:
        """Under ``trainer=fsdp_cpu`` / ``fsdp`` (Lightning's ModelParallelStrategy gives the device mesh): shard
        the model with FSDP2 (framework/distributed/fsdp.py). Other strategies leave it whole."""
        mesh = self.device_mesh
        if mesh is not None and not getattr(self, "_sharded", False):
            from .distributed.fsdp import shard_model

            shard_model(self.model, mesh["data_parallel"])
            self._sharded = True

    # ---- throughput, gradient norm, parameter count -----------------------------------------
    def on_fit_start(self) -> None:
        params = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        for logger in self.loggers:
            logger.log_metrics({"model/params": params, "model/params_trainable": trainable}, step=0)
        # Figures {name: (H, W, C) uint8 array}, e.g. the sparse attention pattern, logged as images
        # <plugin>/<name> by loggers that take images (W&B stores them as PNG).
        if isinstance(self.model, HasFigures):
            for name, image in self.model.figures().items():
                for logger in self.loggers:
                    if hasattr(logger, "log_image"):
                        logger.log_image(key=self._key(name), images=[image])

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if self._to_restore is not None:  # the first batch after a resume
            self._restore_resumed_state()
        # perf/tokens_per_sec: the tokens of every batch since the last logging step over the wall-clock
        # time since then (one sync per window, none per step).
        if self._logs_this_step() and self._rate_step != self.global_step:
            self._rate_step = self.global_step  # gradient accumulation: close the window once per step
            rate = self._token_rate.lap(self.device)
            if rate is not None:
                self.log("perf/tokens_per_sec", rate, sync_dist=True, reduce_fx="sum")  # all ranks' tokens
        self._token_rate.add(batch)
        loader = self.trainer.train_dataloader
        if isinstance(loader, ResumableLoader):  # a checkpoint from now on resumes after this batch
            loader.mark(batch_idx + 1)

    # ---- exact resume: what Lightning's checkpoint lacks --------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Never let non-finite weights replace a good checkpoint (raised before anything is written).
        bad = next((n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()), None)
        if bad is not None:
            raise NonFiniteError(f"parameter {bad} is not finite at step {self.global_step}: checkpoint not written")
        checkpoint["archlab_rng"] = rng_states()  # dropout masks and sampling continue as if never stopped
        if isinstance(self.model, CarriesState):  # stateful TBPTT: the stream's state after the last batch
            checkpoint["archlab_carried_state"] = self.model.carried_state()
        for logger in self.loggers:  # a resumed run continues this W&B run
            if isinstance(logger, WandbLogger):
                checkpoint["archlab_wandb_run_id"] = logger.version

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Restored at the first batch, not now: setting up the loaders draws from torch's generator, and the
        # epoch start resets a carried state.
        self._to_restore = {k: checkpoint[k] for k in ("archlab_rng", "archlab_carried_state") if k in checkpoint}

    def _restore_resumed_state(self) -> None:
        saved, self._to_restore = self._to_restore, None
        if saved.get("archlab_rng") is not None:
            restore_rng_states(saved["archlab_rng"])
        if saved.get("archlab_carried_state") is not None and isinstance(self.model, CarriesState):
            self.model.load_carried_state(saved["archlab_carried_state"], self.device)

    def on_validation_start(self) -> None:
        self._token_rate.reset()  # do not count validation time as training time
        # Text datamodules offer token_bytes (vocab id -> UTF-8 bytes it decodes to); without it no val/bpb.
        table = getattr(getattr(self.trainer, "datamodule", None), "token_bytes", None)
        self._token_bytes = None if table is None else table.to(self.device)
        record_attention_stats(self.model, self.attention_stats)

    def on_validation_end(self) -> None:
        record_attention_stats(self.model, False)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._logs_this_step():
            return
        # Per-part gradient norms (e.g. grad_norm/layer0), keys as _key() says.
        if isinstance(self.model, HasGradStats):
            self.log_dict({self._key(k): v for k, v in self.model.grad_stats().items()})

    def on_train_epoch_start(self) -> None:
        # Stateful models (recurrent TBPTT) drop the state they carry between batches: the stream starts over.
        if isinstance(self.model, ResetsState):
            self.model.reset_state()

    # ---- optimisation -----------------------------------------------------------------------
    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        for module in self._steps_with_optimizer:  # e.g. MoE balancing biases, after the weights moved
            module.after_optimizer_step()

    @property
    def _steps_with_optimizer(self) -> list[StepsWithOptimizer]:
        if not hasattr(self, "_after_step_modules"):
            self._after_step_modules = [m for m in self.model.modules() if isinstance(m, StepsWithOptimizer)]
        return self._after_step_modules

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """One pass over the gradients: their norm (logged as train/grad_norm), the non-finite guard, clipping."""
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        if self.trainer.precision in ("16", "16-mixed"):  # the loss scaler owns overflows: it skips those steps
            if self._logs_this_step():
                self.log("train/grad_norm", torch.nn.utils.get_total_norm([p.grad for p in params]))
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])  # FSDP2: a DTensor (clipping takes it)
        value = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        if not torch.isfinite(value):  # one host sync a step, as for the loss
            self._nonfinite("gradient norm", value)
            for p in params:  # a skipped batch: the optimizer steps past parameters without gradients
                p.grad = None
            return
        if self._logs_this_step():
            self.log("train/grad_norm", value)
        # Clipped here rather than by Lightning, which refuses fused optimizers under bf16 (it guards fp16's
        # loss scaling, which bf16 does not have) and would take the norm a second time.
        if gradient_clip_val and gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        elif gradient_clip_val:
            torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, norm)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("optimizer: no optimizer configured")
        weight_decay = self.optimizer_factory.keywords.get("weight_decay", 0.0)
        optimizer = self.optimizer_factory(param_groups(self.model, weight_decay))
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        if not math.isfinite(total) or total <= 0:
            raise ValueError("scheduler: needs a finite number of steps; set trainer.max_steps")
        scheduler = self.scheduler_factory(optimizer, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
