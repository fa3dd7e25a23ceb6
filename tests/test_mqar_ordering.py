"""Issue 13's learning check: the recall ordering of Zoology's MQAR, at a size a CI run affords.

Two layers of one token mixer, no channel mixer (Zoology's setup), width 64, T=32 with 4 key-value pairs over
64 symbols, Zoology's recipe (AdamW, weight decay 0.1 on matrices, warm-up then cosine, clipping at 1). The
full-size study with its numbers is experiments/mqar (T=64 and 128, 2000 steps, best of two learning rates);
what the literature's "attention >= mamba > lstm" becomes there and here is in experiments/mqar/README.md.
"""
from __future__ import annotations

import pytest
import torch

import framework
from mqar_check import mqar_accuracy

# Per mixer: (learning rate, steps). Attention makes its jump to recall by step 250 at 1e-3. Mamba-2 needs ~1000
# steps and a high rate: at 3e-3 it learns at seed 0 (0.90) but not at seeds 1 and 2 (0.28-0.30, even at 1500
# steps); at 1e-2 seeds 0-3 gave 0.998 / 0.903 / 0.551 / 0.824, so the bounds below leave room for that spread.
# The LSTM gets Mamba-2's budget. Mamba-1 is left to the study: it stays at chance
# for 2000 steps at T=64 and T=128 there (and for 750 here at lr 3e-3 or 1e-2, d_state 16 or 64, mqar_probe), so
# a CI-sized run could only restate that, at ~2 minutes a run.
_RECIPE = {"attention": (1e-3, 500), "mamba2": (1e-2, 1000), "lstm": (3e-3, 1000)}


def _accuracy(mixer: str) -> float:
    lr, steps = _RECIPE[mixer]
    torch.manual_seed(0)
    extra = {"ssm": {"head_dim": 16}} if mixer == "mamba2" else {}  # 8 heads of 16 at width 64, as the study
    model = framework.build_model("decoder", mixer=mixer, ffn="none", norm="rmsnorm", bias=False, vocab_size=64,
                                  d_model=64, n_layers=2, n_heads=1, max_seq_len=32,
                                  position="rope" if mixer == "attention" else "none", **extra)
    return mqar_accuracy(model, steps, t=32, kv=4, batch=64, lr=lr, weight_decay=0.1, warmup_cosine=True, clip=1.0)


@pytest.mark.slow
def test_mqar_recall_ordering_attention_then_mamba2_then_lstm() -> None:
    """Attention recalls every value (1.0 by step 500, measured); Mamba-2's matrix-valued state per head
    learns most of it (0.55-1.0 at 1000 steps over four seeds); the LSTM's vector state stays near the ~0.26
    of guessing among the context's values at the same budget. The literature's order for short sequences is
    attention >= mamba > lstm; with Mamba-1 at chance wherever we trained it at width 64, what reproduces on 2
    cores is attention >= the selective SSM with the larger state (Mamba-2) > lstm (experiments/mqar/README.md)."""
    acc = {mixer: _accuracy(mixer) for mixer in _RECIPE}
    chance = 0.25  # a guess among the context's 4 values
    assert acc["attention"] >= 0.95, acc
    assert acc["mamba2"] >= 0.5, acc  # the worst of four seeds was 0.551
    assert acc["attention"] >= acc["mamba2"] - 0.02, acc
    assert acc["mamba2"] > acc["lstm"] + 0.2, acc
    assert acc["lstm"] < chance + 0.1, acc  # at chance at this budget, as the docstring says
