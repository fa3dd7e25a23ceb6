"""Numerical stability of the recurrent token mixers (issues 13 and 14): 200 AdamW steps at lr 3e-3 (weight decay 0.1,
default init) on Shakespeare bytes, in fp32 and under bf16 autocast on CPU. Every loss and gradient norm must be
finite and the loss must fall; the model is small (d_model 32, 2 layers, 4 x 32 bytes) so the 200 steps fit CI."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import framework
from framework.optim import param_groups
from corpus_batches import shakespeare_batches

STEPS = 200
MIXERS = {  # mixer -> its options (mamba2's head_dim must divide expand * d_model)
    "mamba": {}, "mamba2": {"ssm": {"head_dim": 16}}, "rglru": {}, "lstm": {}, "gru": {},
    "gated_deltanet": {"linear_attn": {"chunk_size": 16}}, "linear_attention": {"linear_attn": {"chunk_size": 16}},
}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("mixer", list(MIXERS))
def test_200_steps_at_lr_3e_3_stay_finite_and_learn(mixer: str, precision: str) -> None:
    torch.manual_seed(0)
    model = framework.build_model("decoder", mixer=mixer, ffn="none", position="none", norm="rmsnorm", bias=False,
                                  vocab_size=256, d_model=32, n_layers=2, **MIXERS[mixer]).train()
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=3e-3)
    losses = []
    for batch in shakespeare_batches(STEPS, b=4, t=32):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(batch[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, 256), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        assert torch.isfinite(loss) and torch.isfinite(grad_norm), (len(losses), loss, grad_norm)
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # From ln(256) = 5.5 nats towards byte-unigram entropy and below: a fall of 1.5 nats needs real learning.
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert last < first - 1.5, (first, last)
