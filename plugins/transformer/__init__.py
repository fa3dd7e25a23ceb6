"""The ``transformer`` plugin: the original encoder-decoder of Vaswani et al. 2017.
Registered via the ``archlab.plugins`` entry point ``transformer = "plugins.transformer:PLUGIN"``."""
from framework.plugin import Plugin

from .config import TransformerConfig
from .metrics import transformer_metrics
from .model import Transformer, build_transformer

PLUGIN = Plugin(
    name="transformer",
    description="Original encoder-decoder Transformer (sinusoidal positions, post-norm, ReLU FFN, shared embeddings)",
    objective="seq2seq",
    config_class=TransformerConfig,
    build=build_transformer,
    metrics=transformer_metrics,
    config_package="plugins.transformer.conf",
)

__all__ = ["PLUGIN", "Transformer", "TransformerConfig"]
