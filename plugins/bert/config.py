"""BertConfig: every option of the encoder-only plugin, one line of meaning each."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from framework.config_schema import check
from framework.nn.moe import MoEConfig
from framework.nn.sparse.config import AttentionKind, SparseAttentionConfig, check_attention
from framework.shared_keys import check_shared_keys


@dataclass
class BertConfig:
    vocab_size: int = 256         # token ids are in [0, vocab_size), [MASK] included (the data decides its id)
    d_model: int = 128            # residual stream width (BERT's hidden_size)
    n_layers: int = 4             # encoder blocks
    n_heads: int = 4              # attention heads; head_dim = d_model / n_heads
    d_ff: int | None = None       # hidden width of the FFN; null = 4*d_model (BERT's intermediate_size)
    dropout: float = 0.1          # on embeddings, attention probabilities and residual branches (BERT: 0.1)
    max_seq_len: int = 256        # longest input (size of the learned position table)
    position: Literal["learned", "rope"] = "learned"  # learned absolute positions (BERT) or rotary in attention
    type_vocab_size: int = 2      # token-type (segment) ids in [0, type_vocab_size); 0 disables the table
    norm_eps: float = 1e-12       # LayerNorm epsilon (BERT: 1e-12)
    activation: Literal["gelu", "gelu_tanh", "relu", "silu"] = "gelu"  # FFN and MLM-head transform (BERT: exact gelu)
    pre_norm: bool = False        # false: post-LN as in BERT, norm(x + f(x)); true: x + f(norm(x)) and a final norm
    tie_weights: bool = True      # MLM decoder shares the token embedding matrix (it keeps its own bias)
    ffn: Literal["mlp", "moe"] = "mlp"  # moe: a Mixture-of-Experts FFN configured by `moe` (aux losses join the objective)
    moe: MoEConfig = field(default_factory=MoEConfig)  # used when ffn=moe (experts' width: moe.d_ff or d_ff / 4*d_model)
    attention: AttentionKind = "dense"  # dense SDPA, or a sparse kind (sliding_window, longformer, bigbird, ...), bidirectional
    sparse: SparseAttentionConfig = field(default_factory=SparseAttentionConfig)  # options of the sparse kinds
    pooling: Literal["cls", "mean"] = "cls"  # encode(): first position's state, or the mean over real tokens
    init_std: float = 0.02        # std of the normal initialisation

    def __post_init__(self) -> None:
        check_shared_keys(self)  # vocab_size, d_model, n_layers, n_heads, d_ff, dropout, max_seq_len
        check(self.type_vocab_size >= 0, "type_vocab_size", f"must be >= 0, got {self.type_vocab_size}")
        check_attention(self.attention, self.sparse, self.n_heads, self.position)
        check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        check(self.init_std > 0, "init_std", f"must be > 0, got {self.init_std}")
        if self.position == "rope":
            check((self.d_model // self.n_heads) % 2 == 0, "position", "rope needs an even head_dim (d_model / n_heads)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model
