"""The sparse-attention plugin: a decoder-only LM whose layers use sliding-window, Sparse Transformer,
Longformer, BigBird or Reformer LSH attention (presets: longformer, bigbird, sparse_transformer, reformer).
The attention kinds themselves live in framework.nn.sparse, so gpt and bert can use them too."""
from framework.plugin import Plugin

from .config import SparseLMConfig
from .metrics import sparse_metrics
from .model import SparseLM, build_sparse_lm

PLUGIN = Plugin(
    name="sparse",
    description="Decoder-only LM with sparse attention (sliding window, strided/fixed, Longformer, BigBird, LSH)",
    objective="causal_lm",
    config_class=SparseLMConfig,
    build=build_sparse_lm,
    metrics=sparse_metrics,
    config_package="plugins.sparse.conf",
)

__all__ = ["PLUGIN", "SparseLM", "SparseLMConfig"]
