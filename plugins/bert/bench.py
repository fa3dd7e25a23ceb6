"""``archlab bench encoders``: training throughput of our encoder (and encoder-decoder) plugins against
Hugging Face at equal size, in the same run, as ratios; the harness is ``framework.bench.vs_reference``.

Registered as the ``encoders`` entry of the ``archlab.benchmarks`` entry-point group. It lives in the bert
plugin, yet also times t5: the cases are timed interleaved round by round in one table, which one module
keeps simple (``--models`` picks cases). t5 is reached only through the registry (``build_model("t5", ...)``),
never by importing ``plugins.t5``, so plugins still import only ``framework``; without the t5 plugin
installed, ``--models bert`` still runs.

Each side computes logits as its own training does: our bert gets ``predict_mask`` (the labelled positions),
as ``archlab train`` passes it, and runs its MLM head on those ~15% of tokens; Hugging Face's BertForMaskedLM
scores every position. Adding an architecture is adding a ``Case`` to ``CASES``.

    archlab bench encoders                                   # d256 L4 H8, batch 8 x 256, fp32 and bf16
    archlab bench encoders --sizes 256x4x8,512x8x8 --steps 20 --dtype bf16
"""
from __future__ import annotations

import sys

import torch
from torch import nn

from framework import build_model
from framework.bench.vs_reference import Batch, Bench, BenchConfig, Case, Size, aligned

MASK_RATE = 0.15


# --- bert vs BertForMaskedLM ----------------------------------------------------------------------


def masked_lm_batch(cfg: BenchConfig, gen: torch.Generator) -> Batch:
    """Random ids, MASK_RATE of the positions replaced by [MASK] (the last id) and scored."""
    ids = torch.randint(0, cfg.vocab - 1, (cfg.batch, cfg.seq), generator=gen)
    chosen = torch.rand(cfg.batch, cfg.seq, generator=gen) < MASK_RATE
    return {"input_ids": ids.masked_fill(chosen, cfg.vocab - 1), "labels": ids.masked_fill(~chosen, -100)}


def build_bert(size: Size, cfg: BenchConfig) -> nn.Module:
    return build_model("bert", vocab_size=cfg.vocab, d_model=size.d_model, n_layers=size.n_layers,
                       n_heads=size.n_heads, max_seq_len=cfg.seq, dropout=0.0)


def build_hf_bert(size: Size, cfg: BenchConfig) -> nn.Module:
    import transformers

    hf_cfg = transformers.BertConfig(
        vocab_size=cfg.vocab, hidden_size=size.d_model, num_hidden_layers=size.n_layers,
        num_attention_heads=size.n_heads, intermediate_size=4 * size.d_model, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=cfg.seq,
        type_vocab_size=2, layer_norm_eps=1e-12, tie_word_embeddings=True,
    )
    hf_cfg._attn_implementation = "sdpa"
    return transformers.BertForMaskedLM(hf_cfg)


BERT = Case(
    name="bert", hf_label="HF BertForMaskedLM (sdpa)", build_ours=build_bert, build_hf=build_hf_bert,
    make_batch=masked_lm_batch,
    ours_logits=lambda model, b: aligned(model(b["input_ids"], predict_mask=b["labels"] != -100), b),
    hf_logits=lambda model, b: (model(input_ids=b["input_ids"]).logits, b["labels"]),
)


# --- t5 vs T5ForConditionalGeneration (v1.0 layout: ReLU FFN, tied head; HF 5.x always ties) -------


def seq2seq_batch(cfg: BenchConfig, gen: torch.Generator) -> Batch:
    """Sources of cfg.seq tokens, targets of cfg.seq // 4 (span-corruption proportions), all scored."""
    src = torch.randint(2, cfg.vocab, (cfg.batch, cfg.seq), generator=gen)
    tgt = torch.randint(2, cfg.vocab, (cfg.batch, max(1, cfg.seq // 4)), generator=gen)
    dec = torch.cat([torch.zeros_like(tgt[:, :1]), tgt[:, :-1]], dim=1)  # start token 0, shifted right
    return {"input_ids": src, "attention_mask": torch.ones_like(src), "decoder_input_ids": dec, "labels": tgt}


def build_t5(size: Size, cfg: BenchConfig) -> nn.Module:
    return build_model("t5", vocab_size=cfg.vocab, d_model=size.d_model, n_layers=size.n_layers,
                       n_heads=size.n_heads, d_ff=4 * size.d_model, max_seq_len=cfg.seq, dropout=0.0)


def build_hf_t5(size: Size, cfg: BenchConfig) -> nn.Module:
    import transformers

    hf_cfg = transformers.T5Config(
        vocab_size=cfg.vocab, d_model=size.d_model, d_kv=size.d_model // size.n_heads, d_ff=4 * size.d_model,
        num_layers=size.n_layers, num_heads=size.n_heads, dropout_rate=0.0, feed_forward_proj="relu",
        tie_word_embeddings=True, use_cache=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    hf_cfg._attn_implementation = "sdpa"
    return transformers.T5ForConditionalGeneration(hf_cfg)


T5 = Case(
    name="t5", hf_label="HF T5ForConditionalGeneration (sdpa)", build_ours=build_t5, build_hf=build_hf_t5,
    make_batch=seq2seq_batch,
    ours_logits=lambda model, b: aligned(model(b["input_ids"], b["attention_mask"], b["decoder_input_ids"]), b),
    hf_logits=lambda model, b: (model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                      decoder_input_ids=b["decoder_input_ids"], use_cache=False).logits, b["labels"]),
)

# Every architecture in the benchmark, in table order: to add one, write its functions as for BERT above.
CASES: list[Case] = [BERT, T5]

BENCH = Bench("encoders", f"Training throughput of our encoder plugins ({', '.join(c.name for c in CASES)}) vs "
              "Hugging Face at the same size.", CASES,
              legend=["size dD LL HH: d_model, layers (per stack), heads."])
run, report, parse_args, main = BENCH.run, BENCH.report, BENCH.parse_args, BENCH.main

if __name__ == "__main__":
    sys.exit(main())
