"""SparseLMConfig: a decoder-only LM whose every layer uses a sparse attention kind."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from framework.config_schema import check
from framework.nn.sparse import SparseAttentionConfig, SparseKind, check_attention


@dataclass
class SparseLMConfig:
    vocab_size: int = 256         # token ids are in [0, vocab_size)
    d_model: int = 128            # residual stream width
    n_layers: int = 4             # transformer blocks
    n_heads: int = 4              # query heads; head_dim = d_model / n_heads
    n_kv_heads: int | None = None  # key/value heads (grouped-query attention); null = n_heads
    d_ff: int | None = None       # FFN hidden width; null = 4*d_model (mlp) or 8/3*d_model (gated)
    dropout: float = 0.0          # on embeddings and residual branches (the sparse kernels have no attention dropout)
    max_seq_len: int = 256        # longest context
    position: Literal["learned", "sinusoidal", "rope", "alibi", "none"] = "learned"
    rope_theta: float = 10000.0   # RoPE base frequency
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    ffn: Literal["mlp", "swiglu", "geglu"] = "mlp"
    activation: Literal["gelu", "gelu_tanh", "relu", "silu"] = "gelu_tanh"  # for ffn=mlp
    bias: bool = True             # biases in linear layers and norms
    tie_weights: bool = True      # output projection shares the token embedding matrix
    init_std: float = 0.02        # std of the normal initialisation
    attention: SparseKind = "sliding_window"  # the sparse pattern of every layer
    sparse: SparseAttentionConfig = field(default_factory=SparseAttentionConfig)  # the pattern's options

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
        if self.position == "rope":
            check((self.d_model // self.n_heads) % 2 == 0, "position", "rope needs an even head_dim (d_model / n_heads)")
        check_attention(self.attention, self.sparse, self.n_heads, self.position)

    @property
    def ffn_hidden(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        if self.ffn == "mlp":
            return 4 * self.d_model
        return 64 * ((int(8 * self.d_model / 3) + 63) // 64)
