"""Channel mixers (per position): mlp (GELU family), swiglu, geglu, moe (every router and option of
``framework.nn.moe``), and none (the layer is its token mixer only)."""
from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric

from framework.nn.feedforward import make_feedforward
from framework.nn.moe import MoEFeedForward, moe_metrics

from .spec import LayerContext, MixerSpec


def _dense(kind: str):
    def build(ctx: LayerContext) -> nn.Module:
        cfg = ctx.config
        return make_feedforward(kind, cfg.d_model, cfg.ffn_width(gated=kind != "mlp"), cfg.activation, cfg.bias, cfg.dropout)

    return build


def build_moe(ctx: LayerContext) -> MoEFeedForward:
    cfg, moe = ctx.config, ctx.options
    # Experts' width: moe.d_ff, else d_ff, else the rule of their activation (gelu: 4x, swiglu: 8/3x).
    return MoEFeedForward(cfg.d_model, moe, d_ff=cfg.ffn_width(gated=moe.activation == "swiglu"), dropout=cfg.dropout)


def collect_moe(per_layer: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack the MoE layers' stats into ``moe_<stat>`` (n_moe_layers, ...) tensors, plus the expert load
    averaged over layers as the W&B histogram ``moe/load`` (stat ``hist_moe/load``)."""
    stats = {f"moe_{k}": torch.stack([s[k] for s in per_layer]) for k in per_layer[0]}
    stats["hist_moe/load"] = stats["moe_load"].mean(0)
    if "moe_bias" in stats:  # auxiliary-loss-free balancing: the selection bias, averaged over layers
        stats["hist_moe/bias"] = stats.pop("moe_bias").mean(0)
    return stats


def _moe_metrics(cfg, layer_ids: list[int]) -> dict[str, Metric]:  # noqa: ANN001
    return moe_metrics(layer_ids, cfg.moe.n_experts, cfg.moe.top_k, prefix="moe/")


MLP = MixerSpec(name="mlp", role="channel", family="ffn", build=_dense("mlp"),
                description="two-layer MLP with model.activation (GPT-2: gelu_tanh), width d_ff or 4*d_model")
SWIGLU = MixerSpec(name="swiglu", role="channel", family="ffn", build=_dense("swiglu"),
                   description="gated SiLU MLP (Llama), width d_ff or 8/3*d_model rounded to 64")
GEGLU = MixerSpec(name="geglu", role="channel", family="ffn", build=_dense("geglu"),
                  description="gated GELU MLP (T5 v1.1), width d_ff or 8/3*d_model rounded to 64")
MOE = MixerSpec(name="moe", role="channel", family="moe", options="moe", build=build_moe, metrics=_moe_metrics,
                collect=collect_moe,
                description="mixture of experts: token/expert choice, top-k, capacity or dropless, shared experts")
NONE = MixerSpec(name="none", role="channel", family="ffn", build=lambda ctx: None,
                 description="no channel mixer: the layer is its token mixer only (a stacked RNN)")
