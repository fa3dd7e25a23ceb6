"""The decoder plugin: every decoder-only architecture as a preset of the composable stack
(framework/stack): GPT-2, Llama, MoE (Switch, Mixtral), sparse attention (Longformer, BigBird, Sparse
Transformer, Reformer), stacked RNNs (Elman, LSTM, GRU) and hybrids (local/global attention,
attention + LSTM, Longformer + MoE). Registered via the ``archlab.plugins`` entry point
``decoder = "plugins.decoder:PLUGIN"``, exactly like a third-party plugin."""
from framework.plugin import Plugin
from framework.stack import StackConfig, StackLM, build_stack

from .legacy import LEGACY_PLUGINS, upgrade_checkpoint
from .metrics import decoder_metrics
from .hf_architectures import HF_ARCHITECTURES

PLUGIN = Plugin(
    name="decoder",
    description="Composable decoder stack: any token mixer x channel mixer per layer (GPT, Llama, MoE, sparse, RNN, hybrids)",
    objective="causal_lm",
    config_class=StackConfig,
    build=build_stack,
    metrics=decoder_metrics,
    config_package="plugins.decoder.conf",
    upgrades={name: upgrade_checkpoint for name in LEGACY_PLUGINS},
    hf_architectures=HF_ARCHITECTURES,
)

__all__ = ["PLUGIN", "StackConfig", "StackLM"]
