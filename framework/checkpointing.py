"""Checkpoints that survive what long runs meet: a kill during a save, pre-emption signals, hours between validations.

- ``AtomicCheckpointIO``: every checkpoint is written to a temporary file in the same directory, synced, then
  renamed over the old one, so a kill at any moment leaves the previous checkpoint whole.
- ``PreemptionCheckpoint``: SIGTERM / SIGUSR1 (what schedulers send before pre-emption) save ``last.ckpt`` at the
  end of the current step and stop training cleanly; ``resume=true`` continues from there. In a submitit job its
  requeue signal (USR2) does the same, and is then handed on to submitit, which requeues the job
  (``hand_on_requeue_signal``; the requeued job resumes: framework/cli/train.py).
- ``periodic_checkpoint``: ``last.ckpt`` every N steps and/or every N minutes, besides the validation checkpoints.
"""
from __future__ import annotations

import logging
import os
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger("archlab")
PREEMPTION_SIGNALS = ("SIGTERM", "SIGUSR1")
_REQUEUE_PENDING: list[int] = []  # submitit's signal, taken during a fit, to hand on once the run has closed


def submitit_requeue_signal() -> int | None:
    """The signal submitit checkpoints and requeues a job on (its ``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default);
    None outside a submitit job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


def requeue_pending() -> bool:
    """Whether the last fit stopped on submitit's requeue signal (handed on by ``hand_on_requeue_signal``)."""
    return bool(_REQUEUE_PENDING)


def hand_on_requeue_signal() -> bool:
    """Deliver submitit's requeue signal, taken by PreemptionCheckpoint during the fit, to submitit's own handler
    now that ``last.ckpt`` is saved and the run's loggers are closed: submitit asks the launcher for the requeued
    job and exits this process (it does not return then). False when there is none to hand on."""
    if not _REQUEUE_PENDING:
        return False
    signal.raise_signal(_REQUEUE_PENDING.pop())
    return True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write then rename: a checkpoint file is either the old one or the complete new one, never half of either."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic on POSIX and Windows
        finally:
            tmp.unlink(missing_ok=True)


class PreemptionCheckpoint(L.Callback):
    """On SIGTERM or SIGUSR1: finish the step, save ``<dirpath>/last.ckpt``, stop. The handlers are installed for
    the fit only (the previous ones restored after), and replace Lightning's own SIGTERM handling, which raises
    mid-step without a checkpoint."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        signals = [getattr(signal, name) for name in PREEMPTION_SIGNALS if hasattr(signal, name)]
        requeue = submitit_requeue_signal()
        if requeue is not None and requeue not in signals:  # submitit's handler would exit mid-step, unsaved
            signals.append(requeue)
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handler)
        log.info("%s to pid %d save %s at the end of the step and stop", "/".join(signal.Signals(s).name for s in signals),
                 os.getpid(), self.dirpath / "last.ckpt")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.received is None or trainer.should_stop:
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)
        log.warning("%s at step %d: saved %s and stopped; continue with resume=true", self.received,
                    trainer.global_step, path)
        trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        requeue = submitit_requeue_signal()
        if requeue is not None and self.received == signal.Signals(requeue).name:
            _REQUEUE_PENDING[:] = [requeue]  # for submitit, once train() has closed the run


def periodic_checkpoint(dirpath: str, every_n_steps: int | None, every_n_minutes: float | None) -> list[L.Callback]:
    """``last.ckpt`` every ``every_n_steps`` steps and every ``every_n_minutes`` minutes (each None: off)."""
    out: list[L.Callback] = []
    if every_n_steps:
        out.append(ModelCheckpoint(dirpath=dirpath, save_top_k=0, save_last=True, every_n_train_steps=every_n_steps,
                                   enable_version_counter=False))
    if every_n_minutes:
        out.append(ModelCheckpoint(dirpath=dirpath, save_top_k=0, save_last=True,
                                   train_time_interval=timedelta(minutes=every_n_minutes), enable_version_counter=False))
    return out
