"""Attention-pattern picture: which keys each query attends to, for a short sequence (PNG / W&B image).

matplotlib (the dev extra) draws titled, labelled panels; a plain install draws the same masks with NumPy alone,
so training a sparse model never needs it."""
from __future__ import annotations

import io

import numpy as np
import torch


def pattern_png(masks: dict[str, torch.Tensor], title: str = "") -> bytes:
    """PNG of (T, T) bool masks side by side (row = query, column = key)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(masks)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for ax, (name, mask) in zip(axes[0], masks.items()):
        ax.imshow(mask.cpu().numpy(), cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def pattern_image(masks: dict[str, torch.Tensor], title: str = "") -> np.ndarray:
    """(H, W, 3) uint8 picture of the masks: matplotlib's when installed, else ``mask_panels``."""
    try:
        return png_to_array(pattern_png(masks, title))
    except ImportError:
        return mask_panels(masks)


def mask_panels(masks: dict[str, torch.Tensor], scale: int = 2, gap: int = 8) -> np.ndarray:
    """The (T, T) masks side by side, black = attended, each cell ``scale`` pixels, white gaps between panels."""
    panels = [np.kron(~m.cpu().numpy().astype(bool), np.ones((scale, scale), dtype=bool)) for m in masks.values()]
    height = max(p.shape[0] for p in panels)
    row = []
    for panel in panels:
        padded = np.ones((height, panel.shape[1]), dtype=bool)
        padded[: panel.shape[0]] = panel
        row += [padded, np.ones((height, gap), dtype=bool)]
    gray = (np.concatenate(row[:-1], axis=1) * 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def png_to_array(png: bytes) -> np.ndarray:
    """(H, W, C) uint8 array of a PNG, as W&B's image logging takes."""
    import matplotlib.image as mpimg

    arr = mpimg.imread(io.BytesIO(png), format="png")
    return (arr * 255).astype(np.uint8) if arr.dtype != np.uint8 else arr
