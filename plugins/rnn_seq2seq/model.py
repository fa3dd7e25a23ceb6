"""Recurrent encoder-decoder with attention, the pre-Transformer seq2seq baseline.

Layout of Luong et al. (2015), "global attention": a (bi)directional encoder reads the source; the decoder
recurrence runs on the target embeddings; at each target step t its state s_t attends over the encoder
states, c_t = sum_j a_tj h_j, and the attentional vector tanh(W_c [s_t; c_t]) feeds the output layer. The
score is Bahdanau's additive v^T tanh(W_q s + W_k h) or Luong's dot s . (W_k h). Without input feeding the
decoder recurrence does not depend on the attention, so under teacher forcing it runs in one fused kernel
and attention is computed for all steps at once. The decoder starts from tanh(W_b mean_j h_j).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from framework.generation.seq2seq import Seq2SeqGenerateMixin
from framework.nn.encoder_decoder import require_decoder_inputs
from framework.output import ModelOutput

from .config import RNNSeq2SeqConfig

RNN_CLASSES = {"elman": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RNNDecoderCache:
    """The decoder's recurrent state during generation: O(1) per step, whatever the target length.
    A ``framework.generation.seq2seq.Seq2SeqCache`` (``length``, ``reorder``)."""

    def __init__(self) -> None:
        self.state: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None  # (L, B, H) [, (L, B, H)]
        self.length = 0  # target positions consumed

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` (beam search picks the surviving beams)."""
        if isinstance(self.state, tuple):
            self.state = tuple(s.index_select(1, index) for s in self.state)
        elif self.state is not None:
            self.state = self.state.index_select(1, index)


class Attention(nn.Module):
    """Scores of decoder states against encoder states, masked to real source tokens."""

    def __init__(self, kind: str, hidden: int, memory_width: int) -> None:
        super().__init__()
        self.kind = kind
        self.key = nn.Linear(memory_width, hidden, bias=False)  # W_k
        if kind == "additive":
            self.query = nn.Linear(hidden, hidden, bias=True)  # W_q (its bias is Bahdanau's b)
            self.v = nn.Linear(hidden, 1, bias=False)

    def forward(self, s: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """s: (B, T, H); memory: (B, S, C); mask: (B, S) -> attention weights (B, T, S)."""
        keys = self.key(memory)  # (B, S, H)
        if self.kind == "dot":
            scores = s @ keys.transpose(1, 2)  # (B, T, S)
        else:
            scores = self.v(torch.tanh(self.query(s)[:, :, None] + keys[:, None])).squeeze(-1)  # (B, T, S)
        if mask is not None:
            scores = scores.masked_fill(~mask.bool()[:, None, :], float("-inf"))
        return scores.float().softmax(-1).to(s.dtype)


class RNNSeq2Seq(Seq2SeqGenerateMixin, nn.Module):
    """``generate`` (greedy, sampling, beam search) comes from ``Seq2SeqGenerateMixin``."""

    def __init__(self, cfg: RNNSeq2SeqConfig) -> None:
        super().__init__()
        self.config = cfg
        h, d, n = cfg.hidden, cfg.d_model, cfg.n_layers
        rnn = RNN_CLASSES[cfg.cell]
        inter_layer_dropout = cfg.dropout if n > 1 else 0.0
        self.src_embed = nn.Embedding(cfg.vocab_size, d)
        self.tgt_embed = self.src_embed if cfg.share_embeddings else nn.Embedding(cfg.vocab_size, d)
        self.encoder = rnn(d, h, num_layers=n, batch_first=True, bidirectional=cfg.bidirectional, dropout=inter_layer_dropout)
        memory_width = h * (2 if cfg.bidirectional else 1)
        self.n_state = 2 if cfg.cell == "lstm" else 1  # (h, c) or h
        self.bridge = nn.Linear(memory_width, self.n_state * n * h)  # encoder summary -> initial decoder state
        self.decoder = rnn(d, h, num_layers=n, batch_first=True, dropout=inter_layer_dropout)
        self.attention = Attention(cfg.attention, h, memory_width) if cfg.attention != "none" else None
        self.combine = nn.Linear(h + (memory_width if self.attention else 0), d)  # W_c
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(d, cfg.vocab_size, bias=False)
        for emb in {id(self.src_embed): self.src_embed, id(self.tgt_embed): self.tgt_embed}.values():
            nn.init.normal_(emb.weight, std=cfg.init_std)
        if cfg.tie_weights:
            self.head.weight = self.tgt_embed.weight

    # ---- encoder ------------------------------------------------------------------------------
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) source -> (B, S, C) encoder states; padded positions (right padding) are zeros and never
        read: the sequences are packed, so the backward direction starts at each source's last real token."""
        x = self.drop(self.src_embed(input_ids))  # (B, S, d)
        if attention_mask is None:
            return self.encoder(x)[0]
        lengths = attention_mask.sum(-1).clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.encoder(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])[0]  # (B, S, C)

    def initial_state(self, memory: torch.Tensor, memory_mask: torch.Tensor | None):
        """tanh(W_b * mean of the real encoder states) -> (L, B, H) (LSTM: (h, c))."""
        if memory_mask is None:
            summary = memory.mean(1)
        else:
            m = memory_mask.to(memory.dtype)[..., None]  # (B, S, 1)
            summary = (memory * m).sum(1) / m.sum(1).clamp(min=1)  # (B, C)
        b = memory.shape[0]
        state = torch.tanh(self.bridge(summary)).view(b, self.n_state, self.config.n_layers, self.config.hidden)
        state = state.permute(1, 2, 0, 3).contiguous()  # (n_state, L, B, H)
        return (state[0], state[1]) if self.n_state == 2 else state[0]

    # ---- decoder ------------------------------------------------------------------------------
    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        cache: RNNDecoderCache | None = None,
        return_attention: bool = False,
    ):
        """(B, T) decoder inputs -> (B, T, V) logits. With ``cache`` the recurrence continues from the state
        the previous call left (first call: from the encoder summary), so steps can come one at a time."""
        if cache is not None and cache.state is not None:
            state = cache.state
        else:
            state = self.initial_state(memory, memory_mask)
        y = self.drop(self.tgt_embed(decoder_input_ids))  # (B, T, d)
        s, new_state = self.decoder(y, state)  # s: (B, T, H)
        if cache is not None:
            cache.state, cache.length = new_state, cache.length + decoder_input_ids.shape[1]
        weights = None
        if self.attention is not None:
            weights = self.attention(s, memory, memory_mask)  # (B, T, S)
            context = weights @ memory  # (B, T, C)
            s = torch.cat([s, context], dim=-1)  # (B, T, H + C)
        logits = self.head(self.drop(torch.tanh(self.combine(s))))  # (B, T, V)
        return (logits, weights) if return_attention else logits

    def new_cache(self) -> RNNDecoderCache:
        return RNNDecoderCache()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
    ) -> ModelOutput:
        """input_ids/attention_mask: (B, S) source (right padding); decoder_input_ids: (B, T) start token +
        target[:-1] (teacher forcing). Returns logits (B, T, V) aligned with the target."""
        require_decoder_inputs("rnn_seq2seq", decoder_input_ids)
        memory = self.encode(input_ids, attention_mask)
        logits, weights = self.decode(decoder_input_ids, memory, attention_mask, return_attention=True)
        stats: dict[str, torch.Tensor] = {}
        if weights is not None:
            stats["attn_entropy_norm"] = _entropy_norm(weights.detach(), attention_mask, decoder_attention_mask)
        return ModelOutput(logits=logits, aux_loss=logits.new_zeros((), dtype=torch.float32), stats=stats)


def _entropy_norm(weights: torch.Tensor, source_mask: torch.Tensor | None, target_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean attention entropy / log(number of real source tokens), over real target steps: 1 = uniform, 0 = one token."""
    p = weights.float()
    entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)  # (B, T)
    n_src = source_mask.sum(-1).float() if source_mask is not None else torch.full(p.shape[:1], float(p.shape[-1]))
    norm = entropy / n_src.clamp(min=2).log()[:, None].to(entropy.device)
    if target_mask is None:
        return norm.mean()
    w = target_mask.float()
    return (norm * w).sum() / w.sum().clamp(min=1)


def build_rnn_seq2seq(cfg: RNNSeq2SeqConfig) -> RNNSeq2Seq:
    return RNNSeq2Seq(cfg)
