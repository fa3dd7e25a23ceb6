"""MoEModelConfig: the ``moe`` plugin (decoder-only LM whose FFNs are experts), one line of meaning each."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from framework.config_schema import check
from framework.nn.moe_config import MoEConfig


@dataclass
class MoEModelConfig:
    vocab_size: int = 256         # token ids are in [0, vocab_size)
    d_model: int = 128            # residual stream width
    n_layers: int = 4             # transformer blocks
    n_heads: int = 4              # query heads; head_dim = d_model / n_heads
    n_kv_heads: int | None = None  # key/value heads (grouped-query attention); null = n_heads
    d_ff: int | None = None       # FFN width of dense layers and of each expert (unless moe.d_ff);
                                  # null = 4*d_model (gelu) or Llama's 8/3*d_model rounded to 64 (swiglu)
    dropout: float = 0.0          # on embeddings, attention probabilities and residual branches
    max_seq_len: int = 256        # longest context
    position: Literal["rope", "learned", "alibi", "none"] = "rope"
    rope_theta: float = 10000.0   # RoPE base frequency
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    norm_eps: float = 1e-5
    bias: bool = False            # biases in attention and dense FFN linear layers
    tie_weights: bool = True      # output projection shares the token embedding matrix
    init_std: float = 0.02        # std of the normal initialisation
    moe_every_n: int = 1          # block i has an MoE FFN when (i + 1) % moe_every_n == 0 (2 = Switch/GShard's
                                  # every other layer); the others keep a dense FFN
    moe: MoEConfig = field(default_factory=MoEConfig)  # the MoE FFN (router, experts, capacity, aux losses)

    def __post_init__(self) -> None:
        check(self.vocab_size >= 2, "vocab_size", f"must be >= 2, got {self.vocab_size}")
        for name in ("d_model", "n_layers", "n_heads", "max_seq_len"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(self.d_model % self.n_heads == 0, "d_model",
              f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.n_kv_heads is not None:
            check(1 <= self.n_kv_heads <= self.n_heads and self.n_heads % self.n_kv_heads == 0, "n_kv_heads",
                  f"must divide n_heads ({self.n_heads}), got {self.n_kv_heads}")
        if self.d_ff is not None:
            check(self.d_ff >= 1, "d_ff", f"must be >= 1, got {self.d_ff}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        check(1 <= self.moe_every_n <= self.n_layers, "moe_every_n",
              f"must be in [1, n_layers={self.n_layers}], got {self.moe_every_n}")
        if self.position == "rope":
            check((self.d_model // self.n_heads) % 2 == 0, "position", "rope needs an even head_dim (d_model / n_heads)")

    @property
    def ffn_hidden(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        if self.moe.activation == "gelu":
            return 4 * self.d_model
        return 64 * ((int(8 * self.d_model / 3) + 63) // 64)

    @property
    def moe_layers(self) -> list[int]:
        """Indices of the blocks whose FFN is a mixture of experts."""
        return [i for i in range(self.n_layers) if (i + 1) % self.moe_every_n == 0]
