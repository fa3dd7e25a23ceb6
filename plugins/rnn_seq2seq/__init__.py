"""The recurrent encoder-decoder plugin: (bi)directional Elman/LSTM/GRU encoder, decoder with additive
(Bahdanau) or dot (Luong) attention, teacher forcing, greedy/sampled/beam decoding. Registered via the
``archlab.plugins`` entry point ``rnn_seq2seq = "plugins.rnn_seq2seq:PLUGIN"`` in pyproject.toml."""
from framework.plugin import Plugin

from .config import RNNSeq2SeqConfig
from .metrics import rnn_seq2seq_metrics
from .model import RNNSeq2Seq, build_rnn_seq2seq

PLUGIN = Plugin(
    name="rnn_seq2seq",
    description="Recurrent encoder-decoder with attention (Bahdanau additive / Luong dot), beam search",
    objective="seq2seq",
    config_class=RNNSeq2SeqConfig,
    build=build_rnn_seq2seq,
    metrics=rnn_seq2seq_metrics,
    config_package="plugins.rnn_seq2seq.conf",
)

__all__ = ["PLUGIN", "RNNSeq2Seq", "RNNSeq2SeqConfig"]
