"""RNNSeq2SeqConfig: every option of the recurrent encoder-decoder with attention, one line of meaning each."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from framework.config_schema import check
from framework.shared_keys import check_shared_keys


@dataclass
class RNNSeq2SeqConfig:
    vocab_size: int = 18            # source and target token ids are in [0, vocab_size)
    cell: Literal["elman", "lstm", "gru"] = "lstm"  # recurrent cell of encoder and decoder (fused kernels)
    d_model: int = 128              # embedding width, and width of the attentional vector fed to the output layer
    hidden_size: int | None = None  # recurrent state width (each direction of the encoder); null = d_model
    n_layers: int = 1               # stacked layers in the encoder and in the decoder
    bidirectional: bool = True      # the encoder reads the source both ways (its states are 2 * hidden wide)
    attention: Literal["additive", "dot", "none"] = "additive"  # Bahdanau additive score, Luong dot score,
                                    # or none (plain encoder-decoder: only the initial state carries the source)
    dropout: float = 0.0            # on embeddings, between layers and on the attentional vector
    share_embeddings: bool = True   # encoder and decoder use one embedding table (one vocabulary)
    tie_weights: bool = True        # output layer shares the decoder embedding
    max_seq_len: int = 16           # longest source/target of the data (recurrence itself has no limit)
    init_std: float = 0.1           # std of the embedding initialisation
    pad_token_id: int = 0
    decoder_start_token_id: int = 0
    eos_token_id: int = 1

    def __post_init__(self) -> None:
        check_shared_keys(self)  # vocab_size, d_model, n_layers, dropout, max_seq_len (no heads, no d_ff)
        if self.hidden_size is not None:
            check(self.hidden_size >= 1, "hidden_size", f"must be >= 1 or null, got {self.hidden_size}")
        check(self.init_std > 0, "init_std", f"must be > 0, got {self.init_std}")
        for name in ("pad_token_id", "decoder_start_token_id", "eos_token_id"):
            value = getattr(self, name)
            check(0 <= value < self.vocab_size, name, f"must be a token id in [0, {self.vocab_size}), got {value}")

    @property
    def hidden(self) -> int:
        return self.hidden_size if self.hidden_size is not None else self.d_model
