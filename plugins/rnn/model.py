"""Recurrent language model: embedding -> stacked fused Elman/LSTM/GRU layers -> (tied) output layer.

Each layer is its own single-layer ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (fused CPU/cuDNN kernel), so every
layer's hidden states are visible for the statistics; dropout sits on the connections between layers.
"""
from __future__ import annotations

import torch
from torch import nn

from framework.output import ModelOutput
from framework.sampling import sample_next_token

from .activations import layer_activations, saturated_share
from .config import RNNConfig

# The recurrent state of one layer: h (1, B, H) for Elman/GRU, (h, c) for LSTM.
LayerState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
State = list[LayerState]

TIME_SEGMENTS = 4  # hidden-state norm is also reported per quarter of the sequence


def _make_layer(cfg: RNNConfig, input_size: int) -> nn.RNNBase:
    kwargs = dict(input_size=input_size, hidden_size=cfg.hidden, num_layers=1, bias=cfg.bias, batch_first=True)
    if cfg.cell == "lstm":
        return nn.LSTM(**kwargs)
    if cfg.cell == "gru":
        return nn.GRU(**kwargs)
    return nn.RNN(nonlinearity=cfg.nonlinearity, **kwargs)


def detach_state(state: State) -> State:
    return [tuple(s.detach() for s in st) if isinstance(st, tuple) else st.detach() for st in state]


def _state_h(st: LayerState) -> torch.Tensor:
    return st[0] if isinstance(st, tuple) else st


def check_right_padding(attention_mask: torch.Tensor | None) -> None:
    """A recurrence reads padding like any token: only trailing padding (after every real token) is
    harmless, since no real position comes after it."""
    if attention_mask is None:
        return
    mask = attention_mask.bool()
    if (mask[:, 1:] & ~mask[:, :-1]).any():
        raise ValueError("rnn: attention_mask has padding before real tokens; recurrent models support right padding only")


class RNNLM(nn.Module):
    def __init__(self, cfg: RNNConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        sizes = [cfg.d_model] + [cfg.hidden] * (cfg.n_layers - 1)
        self.layers = nn.ModuleList(_make_layer(cfg, n_in) for n_in in sizes)
        self.drop = nn.Dropout(cfg.dropout)
        # Tying needs head inputs of width d_model: project the hidden state down (or up) when it differs.
        self.proj = nn.Linear(cfg.hidden, cfg.d_model, bias=False) if cfg.tie_weights and cfg.hidden != cfg.d_model else None
        self.head = nn.Linear(cfg.d_model if cfg.tie_weights else cfg.hidden, cfg.vocab_size, bias=False)
        for module in (self.embed, self.head, self.proj):
            if module is not None:
                nn.init.normal_(module.weight, std=cfg.init_std)
        if cfg.tie_weights:
            self.head.weight = self.embed.weight
        # Set by the training loop on validation batches (framework.nn.attention_stats.record_attention_stats).
        self.record_stats = False
        self.last_stats = None
        self._carried: State | None = None  # stateful training: the detached state after the last batch

    # ---- state --------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        """Zero state for ``batch_size`` sequences."""
        device = device or self.embed.weight.device
        dtype = dtype or self.embed.weight.dtype
        zeros = lambda: torch.zeros(1, batch_size, self.config.hidden, device=device, dtype=dtype)  # noqa: E731
        return [(zeros(), zeros()) if self.config.cell == "lstm" else zeros() for _ in self.layers]

    def reset_state(self) -> None:
        """Forget the carried training state (the loop calls this at every epoch start: the stream restarts)."""
        self._carried = None

    def _carried_for(self, input_ids: torch.Tensor) -> State | None:
        if self._carried is None or _state_h(self._carried[0]).shape[1] != input_ids.shape[0]:
            return None  # nothing carried yet, or the batch size changed (e.g. a last, smaller batch)
        return self._carried

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> ModelOutput:
        """input_ids: (B, T); attention_mask: (B, T), right padding only.

        With ``stateful=True`` in training mode the state left by the previous batch (detached: truncated
        backprop through time) is the initial state; otherwise every batch starts from zero.
        """
        check_right_padding(attention_mask)
        carry = self.config.stateful and self.training
        out, state = self.forward_with_state(input_ids, self._carried_for(input_ids) if carry else None)
        if carry:
            self._carried = detach_state(state)
        return out

    def forward_with_state(
        self, input_ids: torch.Tensor, state: State | None = None, with_stats: bool = True
    ) -> tuple[ModelOutput, State]:
        """Run (B, T) tokens from ``state`` (None = zeros); returns the output and the state after the last token."""
        if state is None:
            state = self.init_state(input_ids.shape[0], input_ids.device)
        x = self.drop(self.embed(input_ids))  # (B, T, d_model)
        new_state: State = []
        hidden_norm, by_time, saturation = [], [], []
        for layer, st in zip(self.layers, state):
            layer_in = x
            h, st_out = layer(layer_in, st)  # h: (B, T, H)
            new_state.append(st_out)
            if with_stats:
                norms = h.detach().float().norm(dim=-1)  # (B, T)
                hidden_norm.append(norms.mean())
                if norms.shape[1] >= TIME_SEGMENTS:
                    by_time.append(torch.stack([seg.mean() for seg in norms.tensor_split(TIME_SEGMENTS, dim=1)]))
                if self.record_stats:
                    c0 = st[1][0] if isinstance(st, tuple) else None
                    share = saturated_share(layer_activations(layer, layer_in.detach(), h.detach(), _state_h(st)[0], c0))
                    if share is not None:
                        saturation.append(share)
            x = self.drop(h)
        if self.proj is not None:
            x = self.proj(x)  # (B, T, d_model)
        logits = self.head(x)  # (B, T, V)
        stats: dict[str, torch.Tensor] = {}
        if with_stats:
            stats["hidden_norm"] = torch.stack(hidden_norm)  # (L,)
            if by_time:
                stats["hidden_norm_by_time"] = torch.stack(by_time).mean(0)  # (TIME_SEGMENTS,)
            if len(saturation) == len(self.layers):
                stats["saturation"] = torch.stack(saturation)  # (L,)
        out = ModelOutput(logits=logits, aux_loss=logits.new_zeros((), dtype=torch.float32), stats=stats)
        return out, new_state

    # ---- gradient statistics (logged by the training loop after backward) -----------------------
    @torch.no_grad()
    def grad_stats(self) -> dict[str, torch.Tensor]:
        """L2 norm of the gradient of each part: ``grad_norm/embedding`` (shared with the head when tied),
        ``grad_norm/layer<i>`` (recurrent layers), ``grad_norm/proj``, ``grad_norm/head`` (untied)."""
        parts = {"embedding": self.embed, **{f"layer{i}": m for i, m in enumerate(self.layers)}}
        if self.proj is not None:
            parts["proj"] = self.proj
        if not self.config.tie_weights:
            parts["head"] = self.head
        out = {}
        for name, module in parts.items():
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            if grads:
                out[f"grad_norm/{name}"] = torch.nn.utils.get_total_norm(grads)
        return out

    # ---- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to (B, T) ``input_ids``; ``temperature=0`` is greedy.

        With ``use_cache`` (the default) the prompt runs once and then each new token advances the carried
        state by one step: O(1) time and memory per token. ``use_cache=False`` recomputes the whole prefix
        from a zero state at every step (the reference the test compares against).
        """
        was_training = self.training
        self.eval()
        tokens = input_ids
        state: State | None = None
        for _ in range(max_new_tokens):
            if use_cache:
                step_input = tokens if state is None else tokens[:, -1:]
                out, state = self.forward_with_state(step_input, state, with_stats=False)
            else:
                out, _ = self.forward_with_state(tokens, None, with_stats=False)
            next_token = sample_next_token(out.logits[:, -1, :], temperature, top_k, top_p, generator)
            tokens = torch.cat([tokens, next_token], dim=1)
        self.train(was_training)
        return tokens


def build_rnn(cfg: RNNConfig) -> RNNLM:
    return RNNLM(cfg)
