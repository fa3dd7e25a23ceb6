"""Transformer (Vaswani et al. 2017) specifics: one shared embedding matrix, sinusoidal positions,
post-norm blocks, the inverse-square-root schedule."""
from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from framework.config_schema import ConfigError
from framework.schedulers import inverse_sqrt
from plugins.transformer import Transformer, TransformerConfig

CFG = dict(vocab_size=16, d_model=32, n_layers=2, n_heads=4, max_seq_len=12)


def test_source_target_and_output_share_one_matrix() -> None:
    shared = Transformer(TransformerConfig(**CFG))
    assert shared.src_emb.weight is shared.tgt_emb.weight is shared.lm_head.weight
    separate = Transformer(TransformerConfig(**CFG, share_embeddings=False))
    n_shared = sum(p.numel() for p in shared.parameters())
    assert sum(p.numel() for p in separate.parameters()) == n_shared + 2 * 16 * 32


def test_sinusoidal_positions_follow_the_paper() -> None:
    model = Transformer(TransformerConfig(**CFG))
    pos, i = 7, 5
    angle = pos / 10000 ** (2 * i / 32)
    assert_close(model.pos_table[pos, 2 * i], torch.tensor(math.sin(angle)))
    assert_close(model.pos_table[pos, 2 * i + 1], torch.tensor(math.cos(angle)))
    # Input = embedding * sqrt(d_model) + position.
    ids = torch.tensor([[3, 3]])
    x = model._embed(model.src_emb, ids)
    assert_close(x[0, 1] - x[0, 0], model.pos_table[1] - model.pos_table[0])


def test_post_norm_blocks_end_normalised() -> None:
    model = Transformer(TransformerConfig(**CFG)).eval()
    memory = model.encode(torch.randint(2, 16, (2, 9)))
    assert_close(memory.mean(-1), torch.zeros(2, 9), atol=1e-5, rtol=0)
    assert_close(memory.var(-1, unbiased=False), torch.ones(2, 9), atol=1e-3, rtol=0)


def test_sequences_longer_than_the_position_table_fail_clearly() -> None:
    model = Transformer(TransformerConfig(**CFG))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.randint(2, 16, (1, 13)), decoder_input_ids=torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ConfigError, match="d_model"):
        TransformerConfig(**(CFG | {"d_model": 27, "n_heads": 3}))  # odd width: no sinusoidal table


def test_inverse_sqrt_schedule() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = inverse_sqrt(opt, total_steps=100, warmup_steps=10)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert_close(torch.tensor(lrs[:10]), torch.arange(1, 11) / 10.0)  # linear warm-up to the peak
    assert lrs[9] == max(lrs) == 1.0
    assert_close(torch.tensor(lrs[39]), torch.tensor(math.sqrt(10 / 40)))  # then 1/sqrt(step)
    # The paper's formula d^-0.5 * min(step^-0.5, step * warmup^-1.5), normalised by its peak.
    paper = [min(s**-0.5, s * 10**-1.5) for s in range(1, 41)]
    assert_close(torch.tensor(lrs), torch.tensor(paper) / max(paper))
    with pytest.raises(ConfigError, match="warmup_steps"):
        inverse_sqrt(opt, total_steps=10, warmup_steps=-1)
