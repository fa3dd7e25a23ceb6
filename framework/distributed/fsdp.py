"""FSDP2 for any plugin's model (``trainer=fsdp_cpu`` / ``fsdp``): every layer of the model's stacks of layers
(each ``nn.ModuleList`` among its children: the decoder's ``blocks``, t5's ``encoder``/``decoder``) is a
``fully_shard`` unit, then the model itself (embeddings, head, final norm: tied weights stay in one unit). Each
rank holds 1/N of every weight between a unit's forward and backward."""
from __future__ import annotations

from torch import nn


def layer_units(model: nn.Module) -> list[nn.Module]:
    """The modules sharded one by one: the members of the model's top-level ModuleLists."""
    return [layer for child in model.children() if isinstance(child, nn.ModuleList) for layer in child]


def shard_model(model: nn.Module, mesh) -> None:  # noqa: ANN001 - a torch DeviceMesh (1-D: data parallel)
    from torch.distributed.fsdp import fully_shard

    for layer in layer_units(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
