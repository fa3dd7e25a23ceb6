"""TransformerConfig: every option of the ``transformer`` plugin (Vaswani et al. 2017), one line each."""
from __future__ import annotations

from dataclasses import dataclass

from framework.config_schema import check
from framework.shared_keys import check_shared_keys


@dataclass
class TransformerConfig:
    vocab_size: int = 256         # token ids are in [0, vocab_size); one vocabulary for source and target
    d_model: int = 128            # residual stream width (the paper's base model: 512)
    n_layers: int = 2             # encoder blocks (paper: 6)
    n_decoder_layers: int | None = None  # decoder blocks; null = n_layers
    n_heads: int = 4              # attention heads; head_dim = d_model / n_heads
    d_ff: int | None = None       # hidden width of the ReLU FFN; null = 4 * d_model (paper: 2048 for 512)
    dropout: float = 0.0          # on embeddings+positions, attention probabilities and residual branches (paper: 0.1)
    max_seq_len: int = 256        # longest source/target (size of the sinusoidal table)
    share_embeddings: bool = True  # one matrix for source embedding, target embedding and pre-softmax projection
    norm_eps: float = 1e-5        # LayerNorm epsilon
    pad_token_id: int = 0         # source/target padding (the data's pad_token_id)
    decoder_start_token_id: int = 0  # first decoder input
    eos_token_id: int = 1         # ends targets; generation stops there

    def __post_init__(self) -> None:
        check_shared_keys(self)  # vocab_size, d_model, n_layers, n_heads, d_ff, dropout, max_seq_len
        check(self.d_model % 2 == 0, "d_model", f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.n_decoder_layers is not None:
            check(self.n_decoder_layers >= 1, "n_decoder_layers", f"must be >= 1, got {self.n_decoder_layers}")
        check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        for name in ("pad_token_id", "decoder_start_token_id", "eos_token_id"):
            value = getattr(self, name)
            check(0 <= value < self.vocab_size, name, f"must be a token id in [0, {self.vocab_size}), got {value}")

    @property
    def decoder_layers(self) -> int:
        return self.n_decoder_layers if self.n_decoder_layers is not None else self.n_layers

    @property
    def ffn_hidden(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model
