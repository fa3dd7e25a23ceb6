"""Learning-rate schedules as LambdaLR factories; Hydra passes the options, the module the step count."""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from .config_schema import ConfigError


def _check_warmup(warmup_steps: int) -> None:
    if warmup_steps < 0:
        raise ConfigError(f"scheduler.warmup_steps: must be >= 0, got {warmup_steps}")


def warmup_cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int = 100, min_lr_ratio: float = 0.1) -> LambdaLR:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` x lr at ``total_steps``."""
    _check_warmup(warmup_steps)
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(f"scheduler.min_lr_ratio: must be in [0, 1], got {min_lr_ratio}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def warmup_constant(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0) -> LambdaLR:
    """Linear warm-up, then the optimizer's lr unchanged."""
    _check_warmup(warmup_steps)
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0)


def inverse_sqrt(optimizer: Optimizer, total_steps: int, warmup_steps: int = 4000) -> LambdaLR:
    """Vaswani et al. 2017: linear warm-up, then decay as 1/sqrt(step); the optimizer's lr is the peak,
    reached at ``warmup_steps`` (the paper's d_model^-0.5 factor is folded into that lr)."""
    _check_warmup(warmup_steps)
    if warmup_steps == 0:
        return LambdaLR(optimizer, lambda step: (step + 1) ** -0.5)
    return LambdaLR(optimizer, lambda step: min((step + 1) / warmup_steps, math.sqrt(warmup_steps / (step + 1))))
