"""The Mixture-of-Experts plugin: a decoder-only LM whose FFNs are routed experts (Switch and Mixtral
presets). The MoE layer itself lives in framework/nn/moe.py, so any plugin can compose it."""
from framework.plugin import Plugin

from .config import MoEModelConfig
from .metrics import moe_metrics
from .model import MoELM, build_moe

PLUGIN = Plugin(
    name="moe",
    description="Decoder-only LM with Mixture-of-Experts FFNs (presets: switch top-1 + capacity, mixtral 8x top-2 dropless)",
    objective="causal_lm",
    config_class=MoEModelConfig,
    build=build_moe,
    metrics=moe_metrics,
    config_package="plugins.moe.conf",
)

__all__ = ["MoELM", "MoEModelConfig", "PLUGIN"]
