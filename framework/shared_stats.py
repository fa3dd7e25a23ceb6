"""Shared statistics: ``ModelOutput.stats`` keys containing "/" (``attn/entropy``, ``resid/rms``, ...), which
the core averages and logs the same way for every architecture, so one W&B panel compares them.

A value is a scalar or a (L,) tensor, one entry per layer, NaN where a layer has no such value (the attention
entropy of an LSTM layer). Logged: ``<key>/layer<i>`` for every layer with a finite mean, ``<key>/mean`` over
those layers; a scalar as ``<key>``.
"""
from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric


def is_shared(key: str) -> bool:
    """Keys without "/" stay private inputs of the plugin's own metrics; ``hist_<name>`` are histograms."""
    return "/" in key and not key.startswith("hist_")


class NanLayerMean(Metric):
    """Running mean per entry of a fixed-shape statistic, NaN (and inf) entries skipped entry by entry."""

    full_state_update = False

    def __init__(self, key: str, shape: torch.Size, **kwargs) -> None:
        super().__init__(**kwargs)
        self.key, self.shape = key, tuple(shape)
        self.add_state("total", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor) -> None:
        value = value.detach().to(self.total.device, torch.float64)
        if tuple(value.shape) != self.shape:
            raise ValueError(f"stats[{self.key!r}] has shape {tuple(value.shape)}; earlier batches gave {self.shape}")
        finite = torch.isfinite(value)
        self.total += torch.where(finite, value, 0.0)
        self.count += finite

    def compute(self) -> dict[str, torch.Tensor]:
        seen = self.count > 0
        mean = (self.total / self.count.clamp(min=1)).float()
        if mean.dim() == 0:
            return {self.key: mean} if seen else {}
        out = {f"{self.key}/layer{i}": mean[i] for i in torch.nonzero(seen).flatten().tolist()}
        if seen.any():
            out[f"{self.key}/mean"] = mean[seen].mean()
        return out


class SharedStats(nn.Module):
    """One ``NanLayerMean`` per shared key, created on first sight (plugins need not declare them)."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics = nn.ModuleDict()
        self._names: dict[str, str] = {}  # stats key -> ModuleDict name (module names may not contain ".")

    def update(self, stats: dict[str, torch.Tensor]) -> None:
        for key, value in stats.items():
            if not is_shared(key):
                continue
            if value.dim() > 1:
                raise ValueError(f"stats[{key!r}]: a shared statistic (key with '/') is a scalar or one value "
                                 f"per layer (L,), got shape {tuple(value.shape)}")
            name = self._names.setdefault(key, key.replace(".", "_"))
            if name not in self.metrics:
                self.metrics[name] = NanLayerMean(key, value.shape).to(value.device)
            self.metrics[name].update(value)

    def compute_and_reset(self) -> dict[str, torch.Tensor]:
        """Log keys -> values for everything seen since the last call."""
        out: dict[str, torch.Tensor] = {}
        for metric in self.metrics.values():
            if metric.update_count:
                out.update(metric.compute())
            metric.reset()
        return out
