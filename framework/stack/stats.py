"""Statistics of a stack's forward, assembled from its layers.

Shared statistics (keys with "/", e.g. ``attn/entropy``) become (n_layers,) tensors with NaN at layers
that do not report them, logged by the core under one scheme for every architecture. A family's own
statistics (MoE routing, RNN saturation) are stacked over the layers of that family for its metrics.
"""
from __future__ import annotations

import torch

from framework.mixers.spec import MixerSpec


def shared_vectors(per_layer: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{key: (L,) float tensor} from each layer's {key: scalar}; NaN where a layer has no such key."""
    keys = sorted({k for layer in per_layer for k in layer})
    if not keys:
        return {}
    device = next(v.device for layer in per_layer for v in layer.values())
    nan = torch.full((), float("nan"), device=device)  # no host sync: everything stays on the model's device
    out = {}
    for key in keys:
        values = [layer[key].detach().float().reshape(()).to(device) if key in layer else nan for layer in per_layer]
        out[key] = torch.stack(values)
    return out


def family_stats(specs: list[MixerSpec], per_layer: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each family's private stats over its layers: ``spec.collect`` or, by default, ``<family>_<key>``
    stacked over the family's layers (keys every one of those layers reported)."""
    groups: dict[str, tuple[MixerSpec, list[dict[str, torch.Tensor]]]] = {}
    for spec, stats in zip(specs, per_layer):
        if stats:
            groups.setdefault(spec.family, (spec, []))[1].append(stats)
    out: dict[str, torch.Tensor] = {}
    for family, (spec, layers) in groups.items():
        if spec.collect is not None:
            out.update(spec.collect(layers))
            continue
        common = set(layers[0]).intersection(*layers[1:])
        for key in sorted(common):
            out[f"{family}_{key}"] = torch.stack([s[key] for s in layers])
    return out


def split_stats(stats: dict[str, torch.Tensor] | None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(shared, private) parts of one layer's stats."""
    shared: dict[str, torch.Tensor] = {}
    private: dict[str, torch.Tensor] = {}
    for key, value in (stats or {}).items():
        (shared if "/" in key else private)[key] = value
    return shared, private
