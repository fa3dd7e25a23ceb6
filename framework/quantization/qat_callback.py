"""Quantization-aware training as a Lightning callback: fake quantization from the first step, a converted
(really quantized) checkpoint at the end."""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import lightning as L

from .apply import convert_qat, prepare_qat
from .checkpoint import quantized_path, save_quantized
from .config import QuantizationConfig

log = logging.getLogger("archlab")


class QuantizationAwareTraining(L.Callback):
    """``setup`` inserts the fake quantizers (torchao QATConfig prepare) before Lightning restores a checkpoint or
    builds the optimizer, so a run resumed mid-QAT gets the same modules (their state-dict keys are nn.Linear's)
    and the optimizer holds the parameters the forward uses. ``on_train_end`` converts a copy of the model and
    writes ``<ckpt_dir>/last.<method>.ckpt``; the run's own last.ckpt stays fake-quantized and resumable."""

    def __init__(self, cfg: QuantizationConfig, ckpt_dir: str | Path) -> None:
        self.cfg = cfg
        self.ckpt_dir = Path(ckpt_dir)
        self.prepared = False
        self.converted_path: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and not self.prepared:
            decisions = prepare_qat(pl_module.model, self.cfg)
            self.prepared = True
            log.info("QAT (%s): fake quantization in %d modules", self.cfg.method, sum(d.quantize for d in decisions))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        model = copy.deepcopy(pl_module.model).eval()
        report = convert_qat(model, self.cfg)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = quantized_path(self.ckpt_dir / "last.ckpt", self.cfg.method)
        self.converted_path = save_quantized(path, dict(pl_module.hparams), model, self.cfg, report,
                                             source="quantization-aware training")
        log.info("QAT: converted model (%s) written to %s", self.cfg.spec.ptq_twin, path)
