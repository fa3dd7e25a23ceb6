"""The ``t5`` encoder-decoder plugin (relative position bias, RMSNorm pre-norm, gated-GELU option).
Registered via the ``archlab.plugins`` entry point ``t5 = "plugins.t5:PLUGIN"`` in pyproject.toml."""
from framework.plugin import Plugin

from .config import T5Config
from .hf_convert import HF_T5
from .metrics import t5_metrics
from .model import T5, build_t5

PLUGIN = Plugin(
    name="t5",
    description="Encoder-decoder T5 (bucketed relative bias, RMSNorm pre-norm, ReLU or gated-GELU FFN)",
    objective="seq2seq",
    config_class=T5Config,
    build=build_t5,
    metrics=t5_metrics,
    config_package="plugins.t5.conf",
    hf_architectures=(HF_T5,),
)

__all__ = ["PLUGIN", "T5", "T5Config"]
