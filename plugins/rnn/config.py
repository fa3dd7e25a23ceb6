"""RNNConfig: every option of the recurrent language-model plugin, one line of meaning each."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from framework.config_schema import check

Cell = Literal["elman", "lstm", "gru"]


@dataclass
class RNNConfig:
    vocab_size: int = 256           # token ids are in [0, vocab_size)
    cell: Cell = "lstm"             # recurrent cell: Elman RNN, LSTM or GRU (PyTorch's fused kernels)
    d_model: int = 256              # token embedding width (input of the first layer)
    hidden_size: int | None = None  # recurrent state width of every layer; null = d_model
    n_layers: int = 2               # stacked recurrent layers
    nonlinearity: Literal["tanh", "relu"] = "tanh"  # Elman cell only (LSTM/GRU have fixed gates)
    dropout: float = 0.0            # on every non-recurrent connection: embedding->layer, between layers, ->head
    tie_weights: bool = True        # output layer shares the embedding; a projection hidden->d_model if they differ
    bias: bool = True               # biases in the recurrent layers
    stateful: bool = False          # training: carry the (detached) state across consecutive batches (TBPTT);
                                    # false resets it to zero every batch. Needs data.order=contiguous to mean anything.
    max_seq_len: int = 256          # training window; recurrence itself has no context limit (generation may exceed it)
    init_std: float = 0.1           # std of the embedding (and projection/head) init; GPT's 0.02 starves the first layer

    def __post_init__(self) -> None:
        check(self.vocab_size >= 2, "vocab_size", f"must be >= 2, got {self.vocab_size}")
        for name in ("d_model", "n_layers", "max_seq_len"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        if self.hidden_size is not None:
            check(self.hidden_size >= 1, "hidden_size", f"must be >= 1 or null, got {self.hidden_size}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.cell == "elman" or self.nonlinearity == "tanh", "nonlinearity",
              f"only applies to cell='elman' (cell is {self.cell!r}); leave it at 'tanh'")
        check(self.init_std > 0, "init_std", f"must be > 0, got {self.init_std}")

    @property
    def hidden(self) -> int:
        return self.hidden_size if self.hidden_size is not None else self.d_model
