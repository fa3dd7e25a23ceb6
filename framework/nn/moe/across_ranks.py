"""Sums over the processes of a data-parallel run, for the MoE statistics that are not averages of per-token
terms: the Switch balance loss E * sum_i f_i * P_i is a product of two batch-wide means, so the mean of per-rank
losses is not the loss of the global batch (and per-rank expert-bias updates would drift apart). Training forwards
sum the counts and probabilities over ranks first; one process, validation and generation never communicate."""
from __future__ import annotations

import torch
import torch.distributed as dist


def data_parallel() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_over_ranks(value: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
    """``value`` summed over every rank; ``differentiable``: gradients flow back to each rank's own part (the
    backward of a sum is a sum of the ranks' gradients, which DDP's averaging turns into the global gradient)."""
    if differentiable:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(value)
    out = value.detach().clone()
    dist.all_reduce(out)
    return out
