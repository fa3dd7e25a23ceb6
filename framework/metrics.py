"""Metric helpers plugins reuse. Every plugin metric is a torchmetrics ``Metric`` whose
``update(stats)`` takes the model's ``stats`` dict; ``compute()`` returns a tensor or a dict of
tensors, logged under the metric's name as given (``<name>/<key>``; plugins prefix their own name)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


def per_layer(values: torch.Tensor, layer_ids: list[int]) -> dict[str, torch.Tensor]:
    """Rows of ``values`` (one per layer) as ``{"layer<id>": ..., "mean": mean over the rows}``."""
    out = {f"layer{i}": v for i, v in zip(layer_ids, values.float())}
    out["mean"] = values.float().mean()
    return out


class Accumulating(Metric):
    """Sum of ``stats[key]`` (a tensor of ``shape``; for per-layer statistics one row per listed layer) over the
    batches that report it. The base of running means: subclasses write ``compute()``."""

    full_state_update = False

    def __init__(self, key: str, shape: tuple[int, ...], layer_ids: Sequence[int] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.key, self.layer_ids = key, list(layer_ids)
        self.add_state("total", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, stats: dict[str, torch.Tensor]) -> None:
        if self.key not in stats:
            return
        value = stats[self.key].detach().to(self.total.device, torch.float64)
        if value.shape != self.total.shape:
            raise ValueError(f"stats[{self.key!r}] has shape {tuple(value.shape)}, expected {tuple(self.total.shape)}")
        self.total += value
        self.count += 1

    def mean_value(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)


class LayerIdMean(Accumulating):
    """Running mean of a scalar per listed layer, ``stats[key]`` of shape (len(layer_ids),), for statistics only
    some layers report (MoE layers, recurrent layers); skipped when absent.

    compute() -> {"layer<id>": ... for each id in layer_ids, "mean": mean over them}, or {} before any update.
    """

    def __init__(self, key: str, layer_ids: list[int], **kwargs) -> None:
        super().__init__(key, (len(layer_ids),), layer_ids, **kwargs)

    def compute(self) -> dict[str, torch.Tensor]:
        return per_layer(self.mean_value(), self.layer_ids) if self.count > 0 else {}
