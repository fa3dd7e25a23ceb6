"""Empirical attention sparsity, comparable across architectures: per-layer entropy of the attention
distribution and the share of attention mass in each query's top-k keys.

Attention kernels (SDPA, blocked sparse kernels) never materialise probabilities, so a layer that
supports this measure recomputes them for a small sample of queries only while recording is on
(the training loop switches it on for validation batches): normal training pays nothing.
"""
from __future__ import annotations

import math

import torch
from torch import nn

MAX_QUERIES = 128  # queries sampled per layer (evenly spaced) from the first sequence of the batch
TOP_K = 8


def record_attention_stats(model: nn.Module, enabled: bool) -> None:
    """Switch recording on/off in every layer that supports it (``record_stats`` attribute)."""
    for module in model.modules():
        if hasattr(module, "record_stats"):
            module.record_stats = enabled
            module.last_stats = None


@torch.no_grad()
def sparsity_stats(
    q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None, top_k: int = TOP_K, max_queries: int = MAX_QUERIES
) -> dict[str, torch.Tensor]:
    """Entropy and top-k mass of softmax(q k^T / sqrt(d) + bias), averaged over heads and sampled queries.

    q: (B, H, T, D); k: (B, H, S, D) (already expanded to H heads); bias: broadcastable to (B, H, T, S),
    -inf where a key is not allowed. Uses the first sequence only. Returns scalars:
    ``entropy`` (nats), ``entropy_norm`` (entropy / log(number of allowed keys), 1 = uniform),
    ``topk_mass`` (mass on the top_k keys; 1 = at most k keys matter).
    """
    t = q.shape[-2]
    rows = torch.linspace(0, t - 1, min(t, max_queries), device=q.device).round().long().unique()
    q0 = q[:1, :, rows].float()  # (1, H, R, D)
    scores = q0 @ k[:1].float().transpose(-1, -2) / math.sqrt(q.shape[-1])  # (1, H, R, S)
    if bias is not None:
        b = bias.expand(q.shape[0], q.shape[1], t, k.shape[-2])[:1, :, rows].float()
        scores = scores + b
    probs = scores.softmax(-1)
    allowed = torch.isfinite(scores)
    logp = torch.where(probs > 0, probs.log(), torch.zeros_like(probs))
    entropy = -(probs * logp).sum(-1)  # (1, H, R)
    n_allowed = allowed.sum(-1).clamp(min=1).float()
    entropy_norm = torch.where(n_allowed > 1, entropy / n_allowed.log().clamp(min=1e-9), torch.ones_like(entropy))
    kk = min(top_k, probs.shape[-1])
    topk_mass = probs.topk(kk, dim=-1).values.sum(-1)
    return {"entropy": entropy.mean(), "entropy_norm": entropy_norm.mean(), "topk_mass": topk_mass.mean()}


def collect_attention_stats(layers: list[nn.Module]) -> dict[str, torch.Tensor]:
    """Stack the ``last_stats`` of attention layers (in order) into per-layer tensors ``attn_<name>``
    of shape (n_layers,); {} when nothing was recorded."""
    recorded = [m.last_stats for m in layers if getattr(m, "last_stats", None) is not None]
    if not recorded or len(recorded) != len(layers):
        return {}
    return {f"attn_{key}": torch.stack([r[key] for r in recorded]) for key in recorded[0]}
