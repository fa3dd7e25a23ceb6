"""Parameter groups: weight decay only on weight matrices of linear/conv-like layers (and never on parameters a
mixer marks ``_no_weight_decay``)."""
from __future__ import annotations

from torch import nn

# Parameters of these modules never decay (their scale is meaningful, not a capacity knob).
_NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.BatchNorm1d)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices of non-norm, non-embedding layers decay; norms, biases, embeddings don't.

    Tied parameters are listed once (by identity).
    """
    no_decay_ids: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            # _no_weight_decay: a mixer's own marker (e.g. Mamba's A_log and D: dynamics, not capacity)
            if (isinstance(module, _NO_DECAY_MODULES) or name.endswith("bias") or param.ndim < 2
                    or getattr(param, "_no_weight_decay", False)):
                no_decay_ids.add(id(param))
    decay, no_decay, seen = [], [], set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (no_decay if id(param) in no_decay_ids else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
