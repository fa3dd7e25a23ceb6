"""Figures a stack offers the W&B logger: the attention pattern of its first sparse layer(s)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from framework.nn.sparse import SparseSelfAttention, union_mask


def sparse_pattern_figure(model: nn.Module, t: int | None = None) -> dict[str, np.ndarray]:
    """Row = query, column = key, per head group; default length 4 windows (64 to 256) so the pattern shows.
    {} when no layer is sparse."""
    layers = [(i, b.mixer) for i, b in enumerate(model.blocks) if isinstance(b.mixer, SparseSelfAttention)]
    if not layers:
        return {}
    from framework.nn.sparse.picture import pattern_image

    cfg = model.config
    t = min(t or min(max(64, 4 * cfg.sparse.window), 256), cfg.max_seq_len)
    masks: dict[str, torch.Tensor] = {}
    first_index, first = layers[0]
    if first.kind == "lsh":
        from framework.nn.sparse.lsh import plan

        x = torch.randn(1, t, cfg.d_model, generator=torch.Generator().manual_seed(0))
        q = first.q_proj(x.to(first.q_proj.weight)).view(1, t, first.n_heads, first.head_dim).transpose(1, 2)
        masks[f"layer{first_index} head0 (random input)"] = union_mask(plan(q, first.rotations, first.sparse.chunk_size), True)[0, 0]
    else:
        # Factorised kinds alternating over layers show two layers; the others one.
        shown = layers[:2] if cfg.sparse.factorize == "layers" and first.kind in ("strided", "fixed") else layers[:1]
        for i, attn in shown:
            for h0, h1, pattern in attn.groups:
                masks[f"layer{i} heads {h0}-{h1 - 1}: {pattern.name}"] = pattern.mask(t)
    return {"attn/pattern": pattern_image(masks, title=f"{first.kind}, t={t}")}
