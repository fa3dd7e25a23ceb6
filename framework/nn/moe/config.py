"""MoEConfig: every option of the Mixture-of-Experts feed-forward layer, one line of meaning each.

It is a nested section of a host config (``model.moe.*``): the decoder stack (for its ``moe`` channel
mixer), bert and t5 (``ffn=moe``) hold a ``moe: MoEConfig`` field, validated by ``framework.config_schema``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from framework.config_schema import check


@dataclass
class MoEConfig:
    n_experts: int = 8            # routed experts per MoE layer (many small ones = fine-grained experts)
    top_k: int = 2                # experts per token (token choice; 1 = Switch, 2 = Mixtral); average experts
                                  # per token for expert choice (sets its capacity)
    d_ff: int | None = None       # hidden width of each expert; null = the host's FFN width
    activation: Literal["swiglu", "gelu"] = "swiglu"  # expert FFN: gated SiLU (Mixtral) or GELU MLP (Switch)
    router: Literal["token_choice", "expert_choice"] = "token_choice"  # expert choice: each expert picks its
                                  # top tokens among the whole batch (it sees the future of a causal LM: for studies)
    softmax_order: Literal["before_topk", "after_topk"] = "after_topk"  # gate weights: softmax over all experts
                                  # then the top-k probs (Switch), or softmax over the top-k logits only (Mixtral)
    jitter: float = 0.0           # multiplicative uniform noise on the router input while training (Switch: 1e-2)
    capacity_factor_train: float = 1.25  # expert capacity = ceil(factor * tokens * top_k / n_experts)
    capacity_factor_eval: float = 2.0    # the same while not training
    dropless: bool = True         # no capacity: every assignment is computed (token choice only)
    n_shared_experts: int = 0     # experts every token uses (DeepSeekMoE), each of width d_ff
    balance_loss_weight: float = 1e-2  # Switch load-balancing loss weight (E * sum_i f_i * P_i)
    z_loss_weight: float = 1e-3   # ST-MoE router z-loss weight (mean logsumexp(logits)^2)
    bias: bool = False            # biases in the experts' linear layers
    # DeepSeekMoE (DeepSeek-V3): sigmoid affinities, group-limited choice, scaled gates, balancing by a bias.
    score: Literal["softmax", "sigmoid"] = "softmax"  # router affinity; sigmoid: each expert's score on its own
    norm_topk: bool = True        # sigmoid: gates = the chosen scores renormalised to sum 1 (DeepSeek-V3 norm_topk_prob)
    routed_scaling: float = 1.0   # routed experts' gates are multiplied by this (DeepSeek-V3: 2.5)
    n_groups: int = 1             # experts in n_groups groups; tokens choose within the topk_groups best groups
    topk_groups: int = 1          # (a group's score: the sum of its top-2 affinities; DeepSeek-V3: 8 and 4)
    bias_balance: bool = False    # auxiliary-loss-free balancing (Wang et al. 2024): a per-expert bias added to the
                                  # affinities for choosing only, moved after each optimizer step toward balance
    bias_rate: float = 1e-3       # its update: bias_i += bias_rate * sign(mean load - load_i)
    seq_balance_loss_weight: float = 0.0  # DeepSeek-V3's sequence-wise balance loss (per sequence E/(kT) sum_i f_i P_i)

    def __post_init__(self) -> None:
        check(self.n_experts >= 1, "n_experts", f"must be >= 1, got {self.n_experts}")
        check(1 <= self.top_k <= self.n_experts, "top_k",
              f"must be in [1, n_experts={self.n_experts}], got {self.top_k}")
        if self.d_ff is not None:
            check(self.d_ff >= 1, "d_ff", f"must be >= 1, got {self.d_ff}")
        for name in ("capacity_factor_train", "capacity_factor_eval"):
            value = getattr(self, name)
            check(math.isfinite(value) and value > 0, name, f"must be > 0, got {value}")
        check(0.0 <= self.jitter < 1.0, "jitter", f"must be in [0, 1), got {self.jitter}")
        check(self.n_shared_experts >= 0, "n_shared_experts", f"must be >= 0, got {self.n_shared_experts}")
        for name in ("balance_loss_weight", "z_loss_weight"):
            check(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        check(self.routed_scaling > 0, "routed_scaling", f"must be > 0, got {self.routed_scaling}")
        check(self.bias_rate >= 0, "bias_rate", f"must be >= 0, got {self.bias_rate}")
        check(self.seq_balance_loss_weight >= 0, "seq_balance_loss_weight",
              f"must be >= 0, got {self.seq_balance_loss_weight}")
        check(self.n_groups >= 1 and self.n_experts % self.n_groups == 0, "n_groups",
              f"must be >= 1 and divide n_experts={self.n_experts}, got {self.n_groups}")
        check(1 <= self.topk_groups <= self.n_groups, "topk_groups",
              f"must be in [1, n_groups={self.n_groups}], got {self.topk_groups}")
        reachable = self.topk_groups * (self.n_experts // self.n_groups)
        check(self.top_k <= reachable, "top_k",
              f"must be <= topk_groups * experts per group = {reachable} (the experts a token can reach), got {self.top_k}")
        if self.router == "expert_choice":
            for name, value, plain in (("score", self.score, "softmax"), ("bias_balance", self.bias_balance, False),
                                       ("n_groups", self.n_groups, 1)):
                check(value == plain, name, f"is a token-choice option; expert_choice routing needs {plain!r}")
        if self.router == "expert_choice":
            check(not self.dropless, "dropless",
                  "expert_choice routing always has a capacity: set dropless=false (capacity_factor_* size it)")

    def capacity_factor(self, training: bool) -> float:
        return self.capacity_factor_train if training else self.capacity_factor_eval
