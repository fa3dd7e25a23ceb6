"""The recurrent plugin: Elman RNN, LSTM and GRU language models on PyTorch's fused kernels, with
stateful (truncated-BPTT) training and O(1)-per-token generation. Registered via the ``archlab.plugins``
entry point ``rnn = "plugins.rnn:PLUGIN"`` in pyproject.toml."""
from framework.plugin import Plugin

from .config import RNNConfig
from .metrics import rnn_metrics
from .model import RNNLM, build_rnn

PLUGIN = Plugin(
    name="rnn",
    description="Recurrent LM: Elman RNN / LSTM / GRU (fused kernels), tied embeddings, stateful TBPTT",
    objective="causal_lm",
    config_class=RNNConfig,
    build=build_rnn,
    metrics=rnn_metrics,
    config_package="plugins.rnn.conf",
)

__all__ = ["PLUGIN", "RNNConfig", "RNNLM"]
