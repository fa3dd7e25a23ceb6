"""DeepSeek's multi-head latent attention (MLA; DeepSeek-V2, arXiv 2405.04434) as a token mixer.

Keys and values come from one low-rank latent per position, ``c = RMSNorm(W_dkv x)`` of width kv_lora_rank,
expanded per head by ``kv_b_proj`` into a content key (qk_nope_head_dim) and a value (v_head_dim); a small
key part (qk_rope_head_dim) carries RoPE and is shared by all heads ("decoupled RoPE"). The query is full rank
or low rank (q_lora_rank) and has the same two parts. Names follow Hugging Face's ``DeepseekV3Attention``.

Decoding caches only ``c`` and the shared RoPE key: (kv_lora_rank + qk_rope_head_dim) numbers per position and
layer, against 2 * n_kv_heads * head_dim for MHA/GQA. It attends in the **absorbed** form: the key up-projection
is folded into the query (q_nope W_uk attends to c directly) and the value up-projection into the output
(attention over c, then W_uv), so the cache is never expanded: one shared "key/value head" of width
kv_lora_rank + qk_rope_head_dim, which SDPA runs as multi-query attention. Training and a prefill with no
cache use the plain (expanded) form, cheaper when there are as many queries as keys.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from framework.config_schema import check
from framework.nn.attention import additive_mask, causal_bias
from framework.nn.attention_stats import sparsity_stats
from framework.nn.dense_weight import dense, is_quantized
from framework.nn.positions import RotaryEmbedding
from framework.nn.sdpa import attention

from .spec import LayerContext, MixerSpec

LATENT_NORM_EPS = 1e-6  # DeepSeek's q_a / kv_a norms use 1e-6 whatever the model's norm_eps


@dataclass
class MLAConfig:
    kv_lora_rank: int = 32              # width of the cached latent c (DeepSeek-V3: 512 at d_model 7168)
    q_lora_rank: int | None = None      # low-rank query through a normed latent of this width; null = full rank
    qk_rope_head_dim: int = 8           # per-head query / shared key dims that carry RoPE (DeepSeek-V3: 64)
    qk_nope_head_dim: int | None = None  # per-head content dims of queries and keys; null = head_dim - qk_rope_head_dim
    v_head_dim: int | None = None       # per-head value width; null = head_dim (d_model / n_heads)
    absorb: bool = True                 # decode in the absorbed form (false: expand the cached latent each step;
                                        # the same numbers, for tests and benchmarks)

    def __post_init__(self) -> None:
        check(isinstance(self.kv_lora_rank, int) and self.kv_lora_rank >= 1, "kv_lora_rank",
              f"must be an integer >= 1, got {self.kv_lora_rank!r}")
        check(self.q_lora_rank is None or (isinstance(self.q_lora_rank, int) and self.q_lora_rank >= 1),
              "q_lora_rank", f"must be null or an integer >= 1, got {self.q_lora_rank!r}")
        check(isinstance(self.qk_rope_head_dim, int) and self.qk_rope_head_dim >= 2 and self.qk_rope_head_dim % 2 == 0,
              "qk_rope_head_dim", f"must be an even integer >= 2 (RoPE rotates pairs), got {self.qk_rope_head_dim!r}")
        for name in ("qk_nope_head_dim", "v_head_dim"):
            value = getattr(self, name)
            check(value is None or (isinstance(value, int) and value >= 1), name,
                  f"must be null or an integer >= 1, got {value!r}")

    def check_fits(self, d_model: int, n_heads: int) -> None:
        """The ranks must compress (at most d_model) and the RoPE part must fit a head."""
        for name in ("kv_lora_rank", "q_lora_rank"):
            value = getattr(self, name)
            check(value is None or value <= d_model, f"mla.{name}",
                  f"must be <= d_model ({d_model}): a latent wider than the model compresses nothing, got {value}")
        head_dim = d_model // n_heads
        if self.qk_nope_head_dim is None:
            check(self.qk_rope_head_dim < head_dim, "mla.qk_rope_head_dim",
                  f"must be < head_dim ({head_dim} = d_model / n_heads) when qk_nope_head_dim is null "
                  f"(the content part is head_dim - qk_rope_head_dim), got {self.qk_rope_head_dim}")

    def dims(self, d_model: int, n_heads: int) -> tuple[int, int, int]:
        """(qk_nope_head_dim, qk_rope_head_dim, v_head_dim) with the nulls resolved."""
        head_dim = d_model // n_heads
        nope = self.qk_nope_head_dim if self.qk_nope_head_dim is not None else head_dim - self.qk_rope_head_dim
        return nope, self.qk_rope_head_dim, self.v_head_dim or head_dim


class MLACache:
    """The decode state of one MLA layer: ``kv`` (B, S, kv_lora_rank + qk_rope_head_dim), each position's latent then
    its RoPE key (RoPE applied), in one tensor: the absorbed decode reads it as the one shared key head as it is.
    Grows by one position per token, by kv_lora_rank + qk_rope_head_dim numbers."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.kv: torch.Tensor | None = None
        self._dense_kv_b: tuple[torch.Tensor, torch.Tensor] | None = None  # (weight as given, its dense form)

    def dense_kv_b(self, weight: torch.Tensor) -> torch.Tensor:
        """``dense(weight)``, computed once per decode state: a quantized kv_b_proj is dequantized for the first
        token, not for every one; the dense copy lives as long as this generation, the stored weight stays packed.
        A plain weight is its own dense form: nothing is copied, and the state holds only its cache."""
        if not is_quantized(weight):
            return weight
        if self._dense_kv_b is None or self._dense_kv_b[0] is not weight:
            self._dense_kv_b = (weight, dense(weight))
        return self._dense_kv_b[1]

    @property
    def length(self) -> int:
        return 0 if self.kv is None else self.kv.shape[1]

    @property
    def latent(self) -> torch.Tensor | None:
        return None if self.kv is None else self.kv[..., : self.rank]

    @property
    def k_rope(self) -> torch.Tensor | None:
        return None if self.kv is None else self.kv[..., self.rank :]

    def update(self, latent: torch.Tensor, k_rope: torch.Tensor) -> torch.Tensor:
        kv = torch.cat([latent, k_rope], dim=-1)
        if self.kv is not None:  # replaced, never modified: shallow copies of a prefilled state stay valid
            kv = torch.cat([self.kv, kv], dim=1)
        self.kv = kv
        return kv

    def bytes_per_token(self) -> int:
        return self.kv.shape[-1] * self.kv.element_size()


class MultiHeadLatentAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, opts: MLAConfig, *, bias: bool, rope: bool, max_seq_len: int,
                 rope_theta: float, dropout: float = 0.0) -> None:
        super().__init__()
        opts.check_fits(d_model, n_heads)
        self.opts, self.n_heads, self.dropout = opts, n_heads, dropout
        self.nope, self.rope_dim, self.v_dim = opts.dims(d_model, n_heads)
        qk = self.nope + self.rope_dim
        self.scale = qk ** -0.5
        r = opts.kv_lora_rank
        if opts.q_lora_rank is None:
            self.q_proj = nn.Linear(d_model, n_heads * qk, bias=False)
        else:
            self.q_a_proj = nn.Linear(d_model, opts.q_lora_rank, bias=bias)
            self.q_a_layernorm = nn.RMSNorm(opts.q_lora_rank, eps=LATENT_NORM_EPS)
            self.q_b_proj = nn.Linear(opts.q_lora_rank, n_heads * qk, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(d_model, r + self.rope_dim, bias=bias)
        self.kv_a_layernorm = nn.RMSNorm(r, eps=LATENT_NORM_EPS)
        self.kv_b_proj = nn.Linear(r, n_heads * (self.nope + self.v_dim), bias=False)
        self.o_proj = nn.Linear(n_heads * self.v_dim, d_model, bias=bias)
        self.rope = RotaryEmbedding(self.rope_dim, max_seq_len, rope_theta) if rope else None
        self.record_stats = False
        self.last_stats: dict[str, torch.Tensor] | None = None

    @torch.no_grad()
    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.o_proj.weight, std=out_std)

    def new_state(self) -> MLACache:
        return MLACache(self.opts.kv_lora_rank)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                state: MLACache | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        h = self.n_heads
        q = self.q_proj(x) if self.opts.q_lora_rank is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(b, t, h, self.nope + self.rope_dim).transpose(1, 2)  # (B, H, T, qk)
        q_nope, q_rope = q.split([self.nope, self.rope_dim], dim=-1)
        latent, k_rope = self.kv_a_proj_with_mqa(x).split([self.opts.kv_lora_rank, self.rope_dim], dim=-1)
        latent = self.kv_a_layernorm(latent)  # (B, T, r)
        offset = state.length if state is not None else 0
        k_rope = k_rope[:, None]  # (B, 1, T, dr): one RoPE key shared by the heads
        if self.rope is not None:
            q_rope, k_rope = self.rope(q_rope, k_rope, offset)
        k_rope = k_rope[:, 0]
        if state is not None:
            kv = state.update(latent, k_rope)  # (B, S, r + dr)
            latent, k_rope = kv.split([self.opts.kv_lora_rank, self.rope_dim], dim=-1)
        s = latent.shape[1]
        mask = self._mask(t, s, attention_mask, x.device, q.dtype)
        causal = mask is None and t > 1
        drop = self.dropout if self.training else 0.0
        if state is not None and offset > 0 and self.opts.absorb:
            y = self._absorbed(q_nope, q_rope, kv, mask, state.dense_kv_b(self.kv_b_proj.weight))
        else:
            k_nope, v = self._expand(latent)
            k = torch.cat([k_nope, k_rope[:, None].expand(-1, h, -1, -1)], dim=-1)  # (B, H, S, qk)
            q = torch.cat([q_nope, q_rope], dim=-1)
            if self.record_stats:
                bias = mask if mask is not None or t == 1 else causal_bias(t, s, x.device)
                self.last_stats = sparsity_stats(q, k, bias)
            y = attention(q, k, v, attn_mask=mask, dropout_p=drop, is_causal=causal, scale=self.scale)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, h * self.v_dim))

    def _expand(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head content keys (B, H, S, nope) and values (B, H, S, dv) from the latent (B, S, r)."""
        b, s, _ = latent.shape
        kv = self.kv_b_proj(latent).view(b, s, self.n_heads, self.nope + self.v_dim).transpose(1, 2)
        return kv.split([self.nope, self.v_dim], dim=-1)

    def _absorbed(self, q_nope: torch.Tensor, q_rope: torch.Tensor, kv: torch.Tensor,
                  mask: torch.Tensor | None, kv_b_weight: torch.Tensor) -> torch.Tensor:
        """softmax(q_nope W_uk c^T + q_rope k_rope^T) c W_uv^T: attention against the cached latent itself. The key
        is one head shared by all query heads, so the heads fold into the query rows: one (H T x S) score matrix per
        sequence, with the cache read once (not once per head, as a GQA kernel expanding its key head would)."""
        b, h, t, _ = q_nope.shape
        r = self.opts.kv_lora_rank
        w = kv_b_weight.view(h, self.nope + self.v_dim, r)  # (H, nope + dv, r)
        w_uk, w_uv = w.split([self.nope, self.v_dim], dim=1)
        q_lat = torch.matmul(q_nope, w_uk.to(q_nope.dtype))  # (B, H, T, r)
        q_all = torch.cat([q_lat, q_rope], dim=-1).reshape(b, h * t, -1)  # (B, H T, r + dr)
        scores = torch.baddbmm(mask.expand(b, h, t, -1).reshape(b, h * t, -1), q_all, kv.transpose(1, 2),
                               alpha=self.scale) if mask is not None else \
            torch.bmm(q_all, kv.transpose(1, 2)).mul_(self.scale)  # (B, H T, S); no mask: one query (t == 1)
        o_lat = torch.bmm(scores.softmax(-1), kv[..., :r]).view(b, h, t, r)  # (B, H, T, r)
        return torch.matmul(o_lat, w_uv.transpose(1, 2).to(o_lat.dtype))  # (B, H, T, dv)

    def _mask(self, t: int, s: int, attention_mask: torch.Tensor | None, device: torch.device,
              dtype: torch.dtype) -> torch.Tensor | None:
        """None when SDPA's causal flag suffices (no padding, t == s or one query); else (B|1, 1, T, S) additive."""
        if attention_mask is None and (t == 1 or t == s):
            return None
        return additive_mask(t, s, attention_mask, True, device, dtype)

    def mixer_stats(self) -> dict[str, torch.Tensor]:
        stats = {"attn/density": torch.ones((), device=self.o_proj.weight.device)}
        if self.last_stats is not None:
            stats["attn/entropy"] = self.last_stats["entropy_norm"]
            stats["attn/topk_mass"] = self.last_stats["topk_mass"]
        return stats


def cache_bytes_per_token(opts: MLAConfig, element_size: int = 4) -> int:
    """Bytes one MLA layer caches per position: the latent and the shared RoPE key."""
    return (opts.kv_lora_rank + opts.qk_rope_head_dim) * element_size


def _build(ctx: LayerContext) -> MultiHeadLatentAttention:
    cfg = ctx.config
    return MultiHeadLatentAttention(cfg.d_model, cfg.n_heads, ctx.options, bias=cfg.bias, rope=cfg.position == "rope",
                                    max_seq_len=cfg.max_seq_len, rope_theta=cfg.rope_theta,
                                    dropout=cfg.dropout)


MLA = MixerSpec(
    name="mla", role="token", family="attn", options="mla", carries="kv", context_limited=True, build=_build,
    description="DeepSeek multi-head latent attention: low-rank KV latent + decoupled RoPE key, absorbed decode",
)
