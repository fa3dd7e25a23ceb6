"""``archlab bench decoder``: training throughput of the decoder plugin's GPT-2 and Llama configurations against
Hugging Face at equal size, with N and MFU; the harness is ``framework.bench.vs_reference``.

Ours is ``build_model("decoder", ...)`` with the settings of the ``gpt`` and ``llama`` presets, given explicitly;
the table calls the two rows ``gpt`` and ``llama``. Hugging Face runs ``GPT2LMHeadModel`` / ``LlamaForCausalLM``
with ``attn_implementation="sdpa"`` (its fastest path on CPU) and ``use_cache=False`` (what training wants).

    archlab bench decoder                                  # d256 L4 H8, batch 8 x 256, fp32 and bf16
    archlab bench decoder --sizes 256x4x8,512x8x8 --steps 20
    python -m plugins.decoder.bench.decoder --dtype bf16 --models llama
    archlab bench decoder --threads 1     # steadier ratios when other jobs share the CPU cores
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from framework import build_model, make_config
from framework.bench import vs_reference
from framework.bench.vs_reference import Batch, Bench, Case, aligned


@dataclass(frozen=True)
class Size(vs_reference.Size):
    n_kv_heads: int | None = None  # llama only; None = n_heads // 2 (GPT-2 always uses n_heads)

    SPEC: ClassVar[str] = "DxLxH or DxLxHxKV"

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else max(1, self.n_heads // 2)

    @property
    def label(self) -> str:
        return f"{super().label}/{self.kv_heads}"

    @classmethod
    def add_flags(cls, p: argparse.ArgumentParser) -> None:
        super().add_flags(p)
        p.add_argument("--kv-heads", dest="n_kv_heads", type=int, default=None,
                       help="llama key/value heads (default heads/2)")


@dataclass
class BenchConfig(vs_reference.BenchConfig):
    sizes: list[Size] = field(default_factory=lambda: [Size(256, 4, 8)])


def llama_d_ff(d_model: int) -> int:
    """Our gated-FFN width rule (8/3 d rounded up to 64), given explicitly to both sides."""
    return make_config("decoder", d_model=d_model, ffn="swiglu").ffn_width(gated=True)


def build_gpt(size: Size, cfg: BenchConfig, **settings: Any) -> nn.Module:
    """Ours at ``size`` with the ``gpt`` preset's settings, or those of another preset given as ``settings``."""
    return build_model("decoder", vocab_size=cfg.vocab, d_model=size.d_model, n_layers=size.n_layers,
                       n_heads=size.n_heads, max_seq_len=cfg.seq, dropout=0.0, **settings)


def build_llama(size: Size, cfg: BenchConfig) -> nn.Module:
    return build_gpt(size, cfg, position="rope", norm="rmsnorm", norm_eps=1e-6, ffn="swiglu", bias=False,
                     n_kv_heads=size.kv_heads, tie_weights=False, d_ff=llama_d_ff(size.d_model))


def build_hf_gpt(size: Size, cfg: BenchConfig) -> nn.Module:
    import transformers

    hf_cfg = transformers.GPT2Config(
        vocab_size=cfg.vocab, n_positions=cfg.seq, n_embd=size.d_model, n_layer=size.n_layers,
        n_head=size.n_heads, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, layer_norm_epsilon=1e-5, tie_word_embeddings=True, use_cache=False,
        bos_token_id=None, eos_token_id=None,
    )
    hf_cfg._attn_implementation = "sdpa"
    return transformers.GPT2LMHeadModel(hf_cfg)


def build_hf_llama(size: Size, cfg: BenchConfig) -> nn.Module:
    import transformers

    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab, hidden_size=size.d_model, intermediate_size=llama_d_ff(size.d_model),
        num_hidden_layers=size.n_layers, num_attention_heads=size.n_heads, num_key_value_heads=size.kv_heads,
        max_position_embeddings=cfg.seq, rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, attention_dropout=0.0, use_cache=False,
    )
    hf_cfg._attn_implementation = "sdpa"
    return transformers.LlamaForCausalLM(hf_cfg)


def lm_batch(cfg: BenchConfig, gen: torch.Generator) -> Batch:
    """Random ids and random targets at every position (the step costs the same whatever they are)."""
    ids = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=gen)
    return {"input_ids": ids, "labels": torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=gen)}


def flops_per_token(n: int, size: Size, seq: int) -> float:
    """Training FLOPs per token, 6N + 12 * layers * heads * head_dim * T (PaLM; nanoGPT's estimate_mfu)."""
    return 6.0 * n + 12.0 * size.n_layers * size.d_model * seq


Builder = Callable[[Size, BenchConfig], nn.Module]


def _case(name: str, hf_name: str, build_ours: Builder, build_hf: Builder) -> Case:
    return Case(name, f"HF {hf_name} (sdpa)", build_ours, build_hf, lm_batch,
                ours_logits=lambda model, b: aligned(model(b["input_ids"]), b),
                hf_logits=lambda model, b: (model(input_ids=b["input_ids"], use_cache=False).logits, b["labels"]),
                flops_per_token=flops_per_token)


CASES = [_case("gpt", "GPT2LMHeadModel", build_gpt, build_hf_gpt),
         _case("llama", "LlamaForCausalLM", build_llama, build_hf_llama)]

BENCH = Bench(
    "decoder", "Training throughput of the decoder plugin (GPT-2 and Llama settings) vs Hugging Face GPT-2/Llama "
    "at the same size.", CASES, Size, BenchConfig, legend=(
        "size dD LL HQ/KV: d_model, layers, query heads / llama's key-value heads (GPT-2 has KV = Q heads).",
        "MFU: (6N + 12 * layers * d_model * seq) * tokens/s / matmul peak of the same dtype.",
    ),
)
run, report, parse_args, main = BENCH.run, BENCH.report, BENCH.parse_args, BENCH.main

if __name__ == "__main__":
    sys.exit(main())
