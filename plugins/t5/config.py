"""T5Config: every option of the encoder-decoder ``t5`` plugin, one line of meaning each."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from framework.config_schema import check
from framework.nn.moe import MoEConfig
from framework.shared_keys import check_shared_keys


@dataclass
class T5Config:
    vocab_size: int = 256         # token ids are in [0, vocab_size); shared by encoder, decoder and head
    d_model: int = 128            # residual stream width
    n_layers: int = 2             # encoder blocks
    n_decoder_layers: int | None = None  # decoder blocks; null = n_layers
    n_heads: int = 4              # attention heads; head_dim = d_model / n_heads
    d_ff: int | None = None       # hidden width of the FFN; null = 4 * d_model
    dropout: float = 0.0          # on embeddings, attention probabilities, FFN hidden and residual branches
    max_seq_len: int = 256        # longest source/target the data produces (relative positions need no table)
    relative_buckets: int = 32    # buckets of the relative position bias (half per direction in the encoder)
    relative_max_distance: int = 128  # offsets beyond this share the last bucket
    ffn: Literal["relu", "gated_gelu", "moe"] = "relu"  # T5 v1.0 ReLU MLP, T5 v1.1 gated GELU (tanh), or a Mixture of Experts
    moe: MoEConfig = field(default_factory=MoEConfig)  # used when ffn=moe, in every encoder and decoder block
    tie_weights: bool = True      # head shares the embedding (T5 v1.0; outputs scaled by d_model^-0.5); false: v1.1
    norm_eps: float = 1e-6        # RMSNorm epsilon
    init_factor: float = 1.0      # scales T5's initialisation stds
    pad_token_id: int = 0         # source/target padding (the data's pad_token_id)
    decoder_start_token_id: int = 0  # first decoder input (T5 starts from the pad token)
    eos_token_id: int = 1         # ends sources and targets; generation stops there

    def __post_init__(self) -> None:
        check_shared_keys(self)  # vocab_size, d_model, n_layers, n_heads, d_ff, dropout, max_seq_len
        if self.n_decoder_layers is not None:
            check(self.n_decoder_layers >= 1, "n_decoder_layers", f"must be >= 1, got {self.n_decoder_layers}")
        check(self.relative_buckets >= 4 and self.relative_buckets % 2 == 0, "relative_buckets",
              f"must be an even number >= 4, got {self.relative_buckets}")
        check(self.relative_max_distance > self.relative_buckets // 2, "relative_max_distance",
              f"must exceed relative_buckets / 2 ({self.relative_buckets // 2}), got {self.relative_max_distance}")
        check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        check(self.init_factor > 0, "init_factor", f"must be > 0, got {self.init_factor}")
        for name in ("pad_token_id", "decoder_start_token_id", "eos_token_id"):
            value = getattr(self, name)
            check(0 <= value < self.vocab_size, name, f"must be a token id in [0, {self.vocab_size}), got {value}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def decoder_layers(self) -> int:
        return self.n_decoder_layers if self.n_decoder_layers is not None else self.n_layers

    @property
    def ffn_hidden(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model
