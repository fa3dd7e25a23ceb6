"""The decoder plugin's metrics: each mixer family's own, for the layers that use it (``moe/...`` routing,
``rnn/...`` saturation; ``framework.stack.stack_metrics``). Shared statistics (``attn/...``, ``resid/...``) are
logged by the core."""
from __future__ import annotations

from torchmetrics import Metric

from framework.stack import StackConfig, stack_metrics


def decoder_metrics(cfg: StackConfig) -> dict[str, Metric]:
    return stack_metrics(cfg)
