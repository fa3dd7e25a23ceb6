"""The decoder-only plugin: GPT-2 style, with a Llama preset. Registered via the ``archlab.plugins``
entry point ``gpt = "plugins.gpt:PLUGIN"`` in pyproject.toml, exactly like a third-party plugin."""
from framework.plugin import Plugin

from .config import GPTConfig
from .metrics import gpt_metrics
from .model import GPT, build_gpt

PLUGIN = Plugin(
    name="gpt",
    description="Decoder-only transformer (GPT-2; Llama preset: RoPE, RMSNorm, SwiGLU, GQA)",
    objective="causal_lm",
    config_class=GPTConfig,
    build=build_gpt,
    metrics=gpt_metrics,
    config_package="plugins.gpt.conf",
)

__all__ = ["GPT", "GPTConfig", "PLUGIN"]
