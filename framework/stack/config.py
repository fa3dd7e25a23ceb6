"""StackConfig: every option of the composable decoder stack, one line of meaning each.

Each layer is a token mixer then a channel mixer (``framework.mixers``), chosen per layer:
``mixer``/``ffn`` for every layer, ``layers``/``ffn_layers`` as a list repeated to ``n_layers``, or
``mixer_every``/``ffn_every`` to place one mixer periodically. Mixer options live once in their own
section (``sparse``, ``moe``, ``rnn``, ``ssm``, ``rglru``, ``mla``, ``linear_attn``). The dataclass is the only place a default lives: the Hydra node
``model/<plugin>_defaults`` is generated from it, and presets hold only what they change.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from framework.config_schema import ConfigError, check
from framework.mixers.recurrent import RecurrentConfig
from framework.mixers.deltanet import LinearAttentionConfig
from framework.mixers.mla import MLAConfig
from framework.mixers.rglru import RGLRUConfig
from framework.mixers.registry import get_mixer
from framework.mixers.spec import MixerSpec
from framework.mixers.ssm import SSMConfig
from framework.nn.moe import MoEConfig
from framework.nn.sparse.config import SparseAttentionConfig, check_attention
from framework.shared_keys import check_shared_keys

from .layout import Periodic, layer_names

# The fields holding the options of built-in mixers (``MixerSpec.options`` names one); each is a dataclass.
OPTION_SECTIONS = ("sparse", "moe", "rnn", "ssm", "rglru", "mla", "linear_attn")


@dataclass
class StackConfig:
    vocab_size: int = 256         # token ids are in [0, vocab_size)
    d_model: int = 128            # residual stream width
    n_layers: int = 4             # layers (token mixer + channel mixer each)
    n_heads: int = 4              # attention query heads; head_dim = d_model / n_heads
    n_kv_heads: int | None = None  # key/value heads (grouped-query attention); null = n_heads
    d_ff: int | None = None       # channel-mixer width; null = 4*d_model (mlp, gelu experts) or 8/3*d_model rounded to 64 (gated)
    dropout: float = 0.0          # on embeddings, attention probabilities and residual branches
    max_seq_len: int = 256        # longest context of attention layers (and of a learned position table)
    mixer: str = "attention"      # token mixer of every layer: attention (dense), sliding_window, strided, fixed,
                                  # longformer, bigbird, lsh, mla, lstm, gru, elman, mamba, mamba2, rglru, gated_deltanet,
                                  # linear_attention (archlab plugins -v lists all)
    layers: list[str] | None = None  # token mixer per layer, repeated to n_layers (e.g. [attention, lstm, lstm, lstm])
    mixer_every: Periodic = field(default_factory=Periodic)  # {name, every, offset}: name at layers i % every == offset
    ffn: str = "mlp"              # channel mixer of every layer: mlp, swiglu, geglu, moe, none
    ffn_layers: list[str] | None = None  # channel mixer per layer, repeated to n_layers
    ffn_every: Periodic = field(default_factory=Periodic)  # e.g. {name: moe, every: 2, offset: 1}: MoE every 2nd layer
    position: Literal["learned", "sinusoidal", "rope", "alibi", "none"] = "learned"
    rope_theta: float = 10000.0   # RoPE base frequency
    norm: Literal["layernorm", "rmsnorm", "none"] = "layernorm"
    norm_eps: float = 1e-5
    pre_norm: bool = True         # norm before each sublayer (GPT-2) or after the residual add (original Transformer)
    residual: bool = True         # x + f(x) around each mixer; false: x = f(x) (a classic stacked RNN)
    activation: Literal["gelu", "gelu_tanh", "relu", "silu"] = "gelu_tanh"  # of the mlp channel mixer (GPT-2: gelu_tanh)
    bias: bool = True             # biases in linear layers, norms and recurrent cells (Llama: false)
    tie_weights: bool = True      # output projection shares the token embedding matrix
    init_std: float = 0.02        # std of the normal initialisation (residual output projections: / sqrt(2 * n_layers))
    embed_scale: float | Literal["sqrt_d_model"] = 1.0  # token embeddings are multiplied by this (Gemma, RecurrentGemma:
                                  # sqrt_d_model; the head, when tied, uses the unscaled matrix)
    logit_softcap: float | None = None  # logits = cap * tanh(logits / cap) (Gemma 2, RecurrentGemma: 30); null = off
    stateful: bool = False        # training: carry the detached recurrent state across consecutive batches (TBPTT);
                                  # needs every token mixer recurrent and data.order=contiguous to mean anything
    sparse: SparseAttentionConfig = field(default_factory=SparseAttentionConfig)  # options of the sparse attention kinds
    moe: MoEConfig = field(default_factory=MoEConfig)  # options of the moe channel mixer
    rnn: RecurrentConfig = field(default_factory=RecurrentConfig)  # options of the lstm, gru, elman token mixers
    ssm: SSMConfig = field(default_factory=SSMConfig)  # options of the mamba, mamba2 token mixers
    rglru: RGLRUConfig = field(default_factory=RGLRUConfig)  # options of the rglru token mixer
    mla: MLAConfig = field(default_factory=MLAConfig)  # options of the mla token mixer (DeepSeek latent attention)
    linear_attn: LinearAttentionConfig = field(default_factory=LinearAttentionConfig)  # of gated_deltanet, linear_attention
    mixer_options: dict[str, Any] = field(default_factory=dict)  # options of third-party mixers, by mixer name

    def __post_init__(self) -> None:
        check(self.n_layers >= 1, "n_layers", f"must be >= 1, got {self.n_layers}")
        tokens, channels = self.token_mixers, self.channel_mixers  # unknown names fail here
        attention = [s for s in tokens if s.family == "attn"]
        check_shared_keys(self, heads_used=bool(attention))  # an RNN stack's width need not divide into heads
        check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        check(self.rope_theta > 0, "rope_theta", f"must be > 0, got {self.rope_theta}")
        check(self.init_std > 0, "init_std", f"must be > 0, got {self.init_std}")
        check(self.embed_scale == "sqrt_d_model" or self.embed_scale > 0, "embed_scale",
              f"must be > 0 or 'sqrt_d_model', got {self.embed_scale!r}")
        check(self.logit_softcap is None or self.logit_softcap > 0, "logit_softcap",
              f"must be > 0 or null, got {self.logit_softcap}")
        for spec in {s.name: s for s in tokens}.values():
            check(spec.causal, "mixer",
                  f"{spec.name!r} cannot be causal, and a decoder predicts the next token from the past only")
        self._check_options_used(tokens + channels)
        if self.position == "rope" and attention:
            check(self.head_dim % 2 == 0, "position", "rope needs an even head_dim (d_model / n_heads)")
        if any(s.options == "mla" for s in tokens):
            self.mla.check_fits(self.d_model, self.n_heads)
        if any(s.options == "linear_attn" for s in tokens):
            self.linear_attn.resolve(self.d_model, self.n_heads)
            check(self.linear_attn.conv_size >= 1 or all(s.name != "gated_deltanet" for s in tokens),
                  "linear_attn.conv_size", "gated_deltanet needs its short conv: give 1 or more taps")
        for kind in {s.name for s in attention if s.options == "sparse"}:
            check_attention(kind, self.sparse, self.n_heads, self.position)
        if self.rnn.nonlinearity != "tanh":
            check(any(s.name == "elman" for s in tokens), "rnn.nonlinearity",
                  "only applies to elman layers (lstm/gru gates are fixed); leave it at 'tanh'")
        if self.stateful:
            check(all(s.carries == "recurrent" for s in tokens), "stateful",
                  "carries the recurrent state across batches, so every token mixer must be recurrent "
                  f"(lstm, gru, elman, mamba, mamba2, rglru, gated_deltanet, linear_attention); this stack has {sorted({s.name for s in tokens if s.carries != 'recurrent'})}")

    def _check_options_used(self, specs: list[MixerSpec]) -> None:
        """Options set for a mixer no layer uses are a mistake (a typo in the layer list, a stale override)."""
        used = {s.options for s in specs if s.options}
        for name in OPTION_SECTIONS:
            section = getattr(self, name)
            check(name in used or section == type(section)(), name,
                  f"options are set but no layer uses a mixer configured by {name!r} "
                  f"(token mixers: {sorted({s.name for s in self.token_mixers})}, "
                  f"channel mixers: {sorted({s.name for s in self.channel_mixers})})")
        names = {s.name for s in specs}
        for name in self.mixer_options:
            check(name in names, f"mixer_options.{name}", f"no layer uses mixer {name!r}")

    # ---- the layer pattern ------------------------------------------------------------------
    @property
    def token_mixers(self) -> list[MixerSpec]:
        """The token mixer of every layer (specs from the mixer registry)."""
        names = layer_names(self.mixer, self.layers, self.mixer_every, self.n_layers, "mixer", "layers", "mixer_every")
        return [_spec(n, "token", where) for n, where in names]

    @property
    def channel_mixers(self) -> list[MixerSpec]:
        names = layer_names(self.ffn, self.ffn_layers, self.ffn_every, self.n_layers, "ffn", "ffn_layers", "ffn_every")
        return [_spec(n, "channel", where) for n, where in names]

    def options_for(self, spec: MixerSpec) -> Any:
        return getattr(self, spec.options) if spec.options else self.mixer_options.get(spec.name)

    # ---- derived sizes ----------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def ffn_width(self, gated: bool) -> int:
        """Hidden width of a channel mixer: d_ff, or 4*d_model (plain) / Llama's 8/3*d_model rounded up to 64 (gated)."""
        if self.d_ff is not None:
            return self.d_ff
        return 64 * ((int(8 * self.d_model / 3) + 63) // 64) if gated else 4 * self.d_model

    @property
    def context_limit(self) -> int | None:
        """Longest context the model can see: max_seq_len with attention layers or a position table, else None."""
        if self.position in ("learned", "sinusoidal") or any(s.context_limited for s in self.token_mixers):
            return self.max_seq_len
        return None


def _spec(name: str, role: str, field_name: str) -> MixerSpec:
    try:
        return get_mixer(name, role, field_name)  # type: ignore[arg-type]
    except ValueError as err:
        raise ConfigError(str(err)) from None

