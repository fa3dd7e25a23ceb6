"""The composable decoder stack: embeddings -> layers (token mixer, channel mixer) -> norm -> LM head.

Every decoder-only architecture of the lab is this one model with a config: GPT-2, Llama, MoE (Switch,
Mixtral), sparse attention (Longformer, BigBird, ...), stacked RNNs, and hybrids of all of them.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from framework.mixers.spec import InitialisesWeights, LayerContext, MixerSpec, ReportsStats
from framework.nn import make_norm, sinusoidal_table
from framework.nn.norms import residual_rms
from framework.output import ModelOutput
from framework.generation.causal import generate_causal

from .config import StackConfig
from .state import StackState
from .stats import family_stats, shared_vectors, split_stats


def _unpack(result) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor] | None]:  # noqa: ANN001
    """A mixer returns a tensor, or an object with output / aux_loss / stats (MixerResult, MoEOutput)."""
    if isinstance(result, torch.Tensor):
        return result, None, None
    return result.output, result.aux_loss, result.stats


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    return tuple(_to(v, device) for v in value) if isinstance(value, (tuple, list)) else value


class Layer(nn.Module):
    """norm -> token mixer -> residual, then norm -> channel mixer -> residual (pre-norm), or the
    post-norm order norm(x + f(x)); ``residual=false`` drops the ``x +`` (a classic stacked RNN)."""

    def __init__(self, cfg: StackConfig, index: int, token: MixerSpec, channel: MixerSpec) -> None:
        super().__init__()
        self.pre_norm, self.residual = cfg.pre_norm, cfg.residual
        norm = lambda: nn.Identity() if cfg.norm == "none" else make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)  # noqa: E731
        self.mixer_norm = norm()
        self.mixer = token.build(LayerContext(cfg, index, cfg.options_for(token)))
        ffn = channel.build(LayerContext(cfg, index, cfg.options_for(channel)))
        self.ffn_norm = norm() if ffn is not None else None
        self.ffn = ffn
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def _add(self, x: torch.Tensor, y: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        y = x + y if self.residual else y
        return y if self.pre_norm else norm(y)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None, state):  # noqa: ANN001
        """Returns (x, aux losses, stats of the token mixer, stats of the channel mixer)."""
        h = self.mixer_norm(x) if self.pre_norm else x
        y, aux_t, stats_t = _unpack(self.mixer(h, attention_mask, state))
        x = self._add(x, self.resid_dropout(y), self.mixer_norm)
        if self.ffn is None:
            return x, (aux_t,), stats_t, None
        h = self.ffn_norm(x) if self.pre_norm else x
        y, aux_c, stats_c = _unpack(self.ffn(h, attention_mask))
        return self._add(x, y, self.ffn_norm), (aux_t, aux_c), stats_t, stats_c


class StackLM(nn.Module):
    def __init__(self, cfg: StackConfig) -> None:
        super().__init__()
        self.config = cfg
        self.token_specs, self.channel_specs = cfg.token_mixers, cfg.channel_mixers
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.embed_scale = math.sqrt(cfg.d_model) if cfg.embed_scale == "sqrt_d_model" else float(cfg.embed_scale)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.position == "learned" else None
        if cfg.position == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(cfg.max_seq_len, cfg.d_model), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Layer(cfg, i, t, c) for i, (t, c) in enumerate(zip(self.token_specs, self.channel_specs)))
        # Post-norm layers end in a norm already; pre-norm needs a final one.
        final = cfg.pre_norm and cfg.norm != "none"
        self.final_norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias) if final else nn.Identity()
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        inactive = sum(b.ffn.inactive_params() for b in self.blocks if hasattr(b.ffn, "inactive_params"))
        self.n_params_total = sum(p.numel() for p in self.parameters())
        self.n_params_active = self.n_params_total - inactive
        self._has_moe = any(s.family == "moe" for s in self.channel_specs)
        self._decodable = all(s.carries != "none" for s in self.token_specs)  # else generation recomputes
        self._reports_stats = [isinstance(b.mixer, ReportsStats) for b in self.blocks]  # a Protocol check is slow
        self._carried: StackState | None = None  # stateful training: the state after the last batch
        self._compiled_decode = None  # torch.compile'd _decode_step (generate(compile=True))
        self._receptive: dict[int, float] = {}

    @torch.no_grad()
    def _init_weights(self) -> None:
        """normal(init_std) for every Linear and Embedding, zero biases; then each mixer's own rule
        (residual output projections at init_std / sqrt(2 * n_layers), GPT-2)."""
        std = self.config.init_std
        out_std = std / math.sqrt(2 * self.config.n_layers)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for mixer in (block.mixer, block.ffn):
                if isinstance(mixer, InitialisesWeights):
                    mixer.init_weights(std, out_std)

    # ---- state ------------------------------------------------------------------------------
    def new_state(self) -> StackState:
        """A fresh decode state: each layer's own (KV cache, recurrent state)."""
        return StackState([block.mixer.new_state() for block in self.blocks])

    def reset_state(self) -> None:
        """Forget the carried training state (the loop calls this at every epoch start: the stream restarts)."""
        self._carried = None

    def carried_state(self) -> dict[str, Any] | None:
        """The state carried between training batches, as plain values for a checkpoint (each layer's state
        object's attributes: tensors, tuples of them, None)."""
        if self._carried is None:
            return None
        return {"length": self._carried.length, "layers": [dict(vars(s)) for s in self._carried.layers]}

    def load_carried_state(self, state: dict[str, Any], device: torch.device) -> None:
        carried = self.new_state()
        carried.length = state["length"]
        for layer, saved in zip(carried.layers, state["layers"]):
            vars(layer).update({k: _to(v, device) for k, v in saved.items()})
        self._carried = carried

    def _training_state(self, batch_size: int) -> StackState:
        carried = self._carried
        if carried is None or carried.batch_size not in (None, batch_size):
            return self.new_state()  # nothing carried yet, or the batch size changed (a last, smaller batch)
        return carried.detached()  # a copy: the forward updates it in place

    # ---- forward ----------------------------------------------------------------------------
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, state: StackState | None = None
    ) -> ModelOutput:
        """input_ids: (B, T); attention_mask: (B, S) 1 = token, 0 = padding (S = positions in ``state`` + T).

        ``state`` (from ``new_state()``) makes this an incremental step: every layer reads and updates its
        own part. With ``stateful=True`` in training the state carried from the previous batch is used
        (detached: truncated backprop through time).
        """
        b, t = input_ids.shape
        carry = self.config.stateful and self.training and state is None
        if carry:
            state = self._training_state(b)
        offset = state.length if state is not None else 0
        if self.config.position in ("learned", "sinusoidal") and offset + t > self.config.max_seq_len:
            raise ValueError(f"sequence of {offset + t} tokens exceeds max_seq_len={self.config.max_seq_len} "
                             "of the position table")
        x = self.tok_emb(input_ids)  # (B, T, C)
        if self.embed_scale != 1.0:  # Gemma / RecurrentGemma: sqrt(d_model)
            x = x * self.embed_scale
        if self.pos_emb is not None or self.config.position == "sinusoidal":
            positions = self._positions(attention_mask, offset, t, input_ids.device)
            x = x + (self.pos_emb(positions) if self.pos_emb is not None else self.pos_table[positions].to(x.dtype))
        x = self.drop(x)
        if state is not None and torch.is_inference_mode_enabled():
            # compiled: one-token steps only (the prefill's length varies; a size-1 dimension is static for Dynamo)
            step = self._compiled_decode if self._compiled_decode is not None and t == 1 else self._decode_step
            return step(x, attention_mask, state, t)
        aux = x.new_zeros((), dtype=torch.float32)
        shared, private_t, private_c, rms = [], [], [], []
        for i, block in enumerate(self.blocks):
            x, auxes, stats_t, stats_c = block(x, attention_mask, state.layers[i] if state is not None else None)
            for a in auxes:
                if a is not None:
                    aux = aux + a
            layer_shared, own_t = split_stats(stats_t)
            if self._reports_stats[i]:
                layer_shared.update(block.mixer.mixer_stats())
            _, own_c = split_stats(stats_c)
            shared.append(layer_shared)
            private_t.append(own_t)
            private_c.append(own_c)
            rms.append(residual_rms(x))
        logits = self._logits(x)
        if state is not None:
            state.length += t
        if carry:
            self._carried = state.detached()
        stats = {"resid/rms": torch.stack(rms), **shared_vectors(shared)}
        stats.update(family_stats(self.token_specs, private_t))
        stats.update(family_stats(self.channel_specs, private_c))
        if self._has_moe:
            stats["moe_params_total"] = torch.tensor(float(self.n_params_total))
            stats["moe_params_active"] = torch.tensor(float(self.n_params_active))
        if offset == 0:
            stats.update(self._receptive_field(t))
        return ModelOutput(logits=logits, aux_loss=aux, stats=stats)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(self.final_norm(x))  # (B, T, V)
        if self.config.logit_softcap is not None:  # Gemma 2 / RecurrentGemma: cap * tanh(logits / cap)
            logits = torch.tanh(logits / self.config.logit_softcap) * self.config.logit_softcap
        return logits

    def _decode_step(self, x: torch.Tensor, attention_mask: torch.Tensor | None, state: StackState,
                     t: int) -> ModelOutput:
        """A generation step (a state, under ``torch.inference_mode``): the layers and the logits only. The
        statistics a training or validation forward collects (a reduction or two per layer, a few Python calls
        each) cost more than a small model's matmuls at one token per step, and nothing reads them here."""
        for block, layer_state in zip(self.blocks, state.layers):
            x = block(x, attention_mask, layer_state)[0]
        logits = self._logits(x)
        state.length += t
        return ModelOutput(logits=logits, aux_loss=logits.new_zeros((), dtype=torch.float32), stats={})

    @staticmethod
    def _positions(attention_mask: torch.Tensor | None, offset: int, t: int, device: torch.device) -> torch.Tensor:
        """Absolute positions of the T new tokens: offset.., or with a padding mask each row's count of real
        tokens before it (left-padded rows then see the positions they would alone; relative positions - RoPE,
        ALiBi - need no such care)."""
        if attention_mask is None or bool(attention_mask.all()):
            return torch.arange(offset, offset + t, device=device)
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -t:]  # (B, T)

    def _receptive_field(self, t: int) -> dict[str, torch.Tensor]:
        """Share of the t positions that reach the last one through all layers, for stacks of static sparse
        patterns (dense layers and recurrences reach everything; lsh depends on the input)."""
        groups = [getattr(block.mixer, "groups", None) for block in self.blocks]
        if not all(groups):
            return {}
        if t not in self._receptive:
            from framework.nn.sparse import receptive_field

            self._receptive[t] = receptive_field(groups, t) / t
        return {"attn/receptive_field": torch.tensor(self._receptive[t])}

    # ---- gradient statistics (logged by the training loop after backward) -----------------------
    @torch.no_grad()
    def grad_stats(self) -> dict[str, torch.Tensor]:
        """L2 norm of the gradient of each part: ``grad_norm/embedding`` (shared with the head when tied),
        ``grad_norm/layer<i>``, ``grad_norm/head`` (untied)."""
        parts: dict[str, nn.Module] = {"embedding": self.tok_emb}
        parts.update({f"layer{i}": block for i, block in enumerate(self.blocks)})
        if not self.config.tie_weights:
            parts["head"] = self.lm_head
        out = {}
        for name, module in parts.items():
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            if grads:
                out[f"grad_norm/{name}"] = torch.nn.utils.get_total_norm(grads)
        return out

    # ---- figures ----------------------------------------------------------------------------
    @torch.no_grad()
    def figures(self) -> dict[str, np.ndarray]:
        """The sparse attention pattern of the first sparse layer(s), as an image for W&B; {} without one."""
        from .figures import sparse_pattern_figure

        return sparse_pattern_figure(self)

    # ---- generation -------------------------------------------------------------------------
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        attention_mask: torch.Tensor | None = None,
        compile: bool = False,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to (B, T) ``input_ids``; ``temperature=0`` is greedy.

        With ``use_cache`` each step feeds one token against every layer's state (KV caches for attention
        layers, O(1) recurrent states for RNN layers); without it (or when a layer has no decode state,
        e.g. lsh) each step recomputes the whole context. Stacks with attention or a position table keep
        their last ``max_seq_len`` tokens in both modes (the state is rebuilt when it would overflow), so
        both give the same tokens; pure recurrent stacks see the whole context. ``attention_mask`` (B, T) batches
        prompts of different lengths padded on the left (attention layers mask the padding; recurrent layers
        refuse left padding). ``compile`` runs the decode step through ``torch.compile`` (dynamic shapes: one
        graph for every cache length; the first call compiles, tens of seconds on a CPU).
        """
        if compile and self._compiled_decode is None:
            self._compiled_decode = torch.compile(self._decode_step, dynamic=True)
        return generate_causal(
            self, input_ids, max_new_tokens, new_state=self.new_state if use_cache and self._decodable else None,
            context_limit=self.config.context_limit, temperature=temperature, top_k=top_k, top_p=top_p,
            generator=generator, attention_mask=attention_mask,
        )


def build_stack(cfg: StackConfig) -> StackLM:
    return StackLM(cfg)
