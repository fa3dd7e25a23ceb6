"""Mixture-of-Experts feed-forward layer (token-choice and expert-choice routing, capacity, shared experts,
balance and z losses, sparse upcycling): the layer, its config, routers, grouped experts and metrics.

``layer`` holds ``MoEFeedForward`` (router -> sorted dispatch -> experts -> scatter back) and its losses;
``config`` its one typed config (``model.moe.*``), ``router`` which tokens each expert computes, ``experts``
the stacked expert weights run with grouped matmuls, ``metrics`` the torchmetrics that read its stats.
"""
from .config import MoEConfig
from .experts import GroupedExperts
from .layer import MoEFeedForward, MoEOutput, collect_moe_stats, load_balance_loss, make_expert, router_z_loss
from .metrics import CoSelection, ExpertLoad, ParamCounts, moe_metrics, normalised_entropy
from .router import Router, Routing, capacity, expert_choice, token_choice, top_experts

__all__ = [
    "CoSelection", "ExpertLoad", "GroupedExperts", "MoEConfig", "MoEFeedForward", "MoEOutput", "ParamCounts",
    "Router", "Routing", "capacity", "collect_moe_stats", "expert_choice", "load_balance_loss", "make_expert",
    "moe_metrics", "normalised_entropy", "router_z_loss", "token_choice", "top_experts",
]
