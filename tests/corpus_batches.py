"""Random windows of the built-in Shakespeare bytes, for the short training checks of the mixer tests."""
from __future__ import annotations

import torch


def shakespeare_batches(n: int, b: int = 8, t: int = 64) -> list[torch.Tensor]:
    """``n`` batches of ``b`` windows of ``t + 1`` bytes (inputs and shifted targets), the same every call."""
    from framework.data.corpus import shakespeare_bytes

    data = shakespeare_bytes()[:200_000].long()
    starts = torch.randint(0, len(data) - t - 1, (n, b), generator=torch.Generator().manual_seed(0))
    return [torch.stack([data[s : s + t + 1] for s in row.tolist()]) for row in starts]
