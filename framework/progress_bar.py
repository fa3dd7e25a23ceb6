"""The training progress bar: optimizer steps out of ``trainer.max_steps`` and tokens/s when training by steps.

Lightning's bars count the batches of an epoch ("Epoch 0: 40/300"; Rich's: "Epoch 0/-2" with ``max_epochs=-1``),
which says little when the run is sized in steps: an epoch of Shakespeare ends at an arbitrary step and the count
starts over. Epoch-based training (``max_epochs`` > 0, or no ``max_steps``) keeps Lightning's bar unchanged.
"""
from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

TOKENS_PER_SEC = "perf/tokens_per_sec"  # logged by ArchitectureModule every log_every_n_steps


def trains_by_steps(trainer: L.Trainer) -> bool:
    """``max_steps`` ends the run and no epoch limit does (Lightning reads ``max_epochs=None`` as -1 then)."""
    return trainer.max_steps > 0 and (trainer.max_epochs is None or trainer.max_epochs < 0)


def tokens_per_sec_text(rate: float) -> str:
    """12345.6 -> "12.3k": three significant digits, short enough for the bar's postfix."""
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if rate >= threshold:
            return f"{rate / threshold:.3g}{suffix}"
    return f"{rate:.3g}"


class StepProgressBar(TQDMProgressBar):
    """``step 120/3000  4%|▍   | [00:10<04:00, 12.00step/s, v_num=…, train/loss=5.47, tok/s=12.3k]``.

    One bar for the whole run (not one per epoch), starting at the resumed step; the validation bar is
    Lightning's. Redrawn every ``refresh_rate`` optimizer steps, like the parent.
    """

    STEP_BAR_FORMAT = "{desc} {n_fmt}/{total_fmt} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}, " \
                      "{rate_noinv_fmt}{postfix}]"

    def init_train_tqdm(self) -> Any:
        bar = super().init_train_tqdm()
        if trains_by_steps(self.trainer):
            bar.bar_format, bar.unit = self.STEP_BAR_FORMAT, "step"
            bar.set_description_str("step", refresh=False)
            bar.reset(total=self.trainer.max_steps)
            bar.initial = bar.n = self.trainer.global_step  # a resumed run continues its count (and rate)
        return bar

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if not trains_by_steps(trainer):
            super().on_train_epoch_start(trainer, *args)  # steps run across epochs: no reset between them

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not trains_by_steps(trainer):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        bar, step = self.train_progress_bar, trainer.global_step
        # step == bar.n: an accumulation batch (or a skipped non-finite one) made no optimizer step.
        if bar is not None and step != bar.n and self._should_update(step, bar.total):
            if not bar.disable:
                bar.n = step
                bar.refresh()
            bar.set_postfix(self.get_metrics(trainer, pl_module))
        return None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trains_by_steps(trainer):
            return super().on_train_epoch_end(trainer, pl_module)
        if not self.train_progress_bar.disable:  # the bar lives on to the next epoch (closed at on_train_end)
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
        if trainer.global_step >= trainer.max_steps:
            # Done: end the bar's line now, before Lightning logs "`Trainer.fit` stopped", which would land on it.
            self.train_progress_bar.close()
        return None

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        rate = trainer.callback_metrics.get(TOKENS_PER_SEC)
        if trains_by_steps(trainer) and rate is not None:
            items["tok/s"] = tokens_per_sec_text(float(rate))
        return items
