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
        if self.router == "expert_choice":
            check(not self.dropless, "dropless",
                  "expert_choice routing always has a capacity: set dropless=false (capacity_factor_* size it)")

    def capacity_factor(self, training: bool) -> float:
        return self.capacity_factor_train if training else self.capacity_factor_eval
