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

from .capabilities import HasFigures, HasGradStats, ResetsState, takes_predict_mask
from .nn.attention_stats import record_attention_stats
from .optim import param_groups
from .registry import get_plugin, make_config
from .shared_stats import SharedStats
from .throughput import TokenRate

IGNORE_INDEX = -100


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
    ) -> None:
        super().__init__()
        # Plain values only, so checkpoints load with weights_only=True and rebuild the model.
        self.save_hyperparameters("plugin_name", "model_config")
        self.plugin = get_plugin(plugin_name)
        config = make_config(plugin_name, **model_config)
        self.model: nn.Module = self.plugin.build(config)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.plugin_metrics_every_n_steps = plugin_metrics_every_n_steps
        self.attention_stats = attention_stats  # entropy / top-k mass on validation batches
        self.label_smoothing = label_smoothing  # training loss only
        self._sparse_prediction = self.plugin.objective == "masked_lm" and takes_predict_mask(self.model)
        self.val_plugin_metrics = nn.ModuleDict(self.plugin.metrics(config))
        self.train_plugin_metrics = nn.ModuleDict(self.plugin.metrics(config))
        self.val_shared, self.train_shared = SharedStats(), SharedStats()
        self.val_loss, self.val_acc, self.val_exact = MeanMetric(), MeanMetric(), MeanMetric()
        self._token_rate = TokenRate()
        self._rate_step = -1  # the global step whose window was last closed

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

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out, loss = self._step(batch, self.label_smoothing)
        aux = out.aux_loss.float()
        if self._logs_this_step():  # one host sync per logging step, not per step
            self.log("train/loss", loss, prog_bar=True)
            if aux.requires_grad or aux.abs().item() > 0:
                self.log("train/aux_loss", aux)
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
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/ppl", torch.exp(loss.clamp(max=50)))
        self.log("val/acc", self.val_acc.compute(), prog_bar=True)
        self.log("val/exact_match", self.val_exact.compute())
        for metric in (self.val_loss, self.val_acc, self.val_exact):
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
            self.log_dict(scalars)

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
        # perf/tokens_per_sec: the tokens of every batch since the last logging step over the wall-clock
        # time since then (one sync per window, none per step).
        if self._logs_this_step() and self._rate_step != self.global_step:
            self._rate_step = self.global_step  # gradient accumulation: close the window once per step
            rate = self._token_rate.lap(self.device)
            if rate is not None:
                self.log("perf/tokens_per_sec", rate)
        self._token_rate.add(batch)

    def on_validation_start(self) -> None:
        self._token_rate.reset()  # do not count validation time as training time
        record_attention_stats(self.model, self.attention_stats)

    def on_validation_end(self) -> None:
        record_attention_stats(self.model, False)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._logs_this_step():
            return
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads:
            self.log("train/grad_norm", torch.nn.utils.get_total_norm(grads))
        # Per-part gradient norms (e.g. grad_norm/layer0), keys as _key() says.
        if isinstance(self.model, HasGradStats):
            self.log_dict({self._key(k): v for k, v in self.model.grad_stats().items()})

    def on_train_epoch_start(self) -> None:
        # Stateful models (recurrent TBPTT) drop the state they carry between batches: the stream starts over.
        if isinstance(self.model, ResetsState):
            self.model.reset_state()

    # ---- optimisation -----------------------------------------------------------------------
    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        # Lightning refuses to clip for a fused optimizer under any mixed precision, because with fp16 loss
        # scaling the fused step unscales the gradients itself. bf16 has no loss scaling: the gradients here
        # are already true, so clip them directly. (fp16 + fused + clipping fails at config time, train.py.)
        fused = getattr(optimizer, "defaults", {}).get("fused")
        if gradient_clip_val and fused and self.trainer.precision == "bf16-mixed":
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

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
