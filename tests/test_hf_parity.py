"""Numerical parity with Hugging Face ``transformers`` at tiny size: the same weights copied across,
``assert_close`` on the logits (litgpt's test style).

GPT-2 checks learned positions, LayerNorm with bias, the tanh-GELU MLP and tied embeddings; Llama checks
RoPE (half-split layout), RMSNorm, SwiGLU, grouped-query attention and an untied head.
"""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from framework.stack import StackConfig as GPTConfig, StackLM as GPT
from plugins.decoder.hf_gpt2 import from_gpt2
from plugins.decoder.hf_llama import from_llama

transformers = pytest.importorskip("transformers")

VOCAB, D_MODEL, N_LAYERS, N_HEADS, N_KV_HEADS, D_FF, MAX_LEN = 64, 32, 2, 4, 2, 48, 32
TOLERANCE = dict(rtol=1e-5, atol=1e-5)  # fp32


def randomize_(model: torch.nn.Module, std: float = 0.2) -> None:
    """Replace HF's init (std 0.02, unit norms) by larger random weights, so logits are far from uniform
    and a swapped or transposed tensor cannot hide; norm scales stay around 1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ln_" in name:
                p.copy_(1.0 + std * torch.randn_like(p) if name.endswith("weight") else std * torch.randn_like(p))
            else:
                p.normal_(0.0, std)


def load_exactly(model: GPT, state: dict[str, torch.Tensor]) -> None:
    """Every parameter of ours is set, and nothing is left over."""
    missing, unexpected = model.load_state_dict({k: v.clone() for k, v in state.items()}, strict=False)
    assert not missing and not unexpected, (missing, unexpected)


# --- model pairs ----------------------------------------------------------------------------------


def gpt2_pair(attn_implementation: str) -> tuple[torch.nn.Module, GPT]:
    hf_cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=MAX_LEN, n_embd=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
    )
    hf_cfg._attn_implementation = attn_implementation
    hf = transformers.GPT2LMHeadModel(hf_cfg)
    randomize_(hf)
    ours = GPT(GPTConfig(
        vocab_size=VOCAB, d_model=D_MODEL, n_layers=N_LAYERS, n_heads=N_HEADS, max_seq_len=MAX_LEN,
        position="learned", norm="layernorm", norm_eps=1e-5, ffn="mlp", activation="gelu_tanh",
        bias=True, pre_norm=True, tie_weights=True, dropout=0.0,
    ))
    load_exactly(ours, from_gpt2(hf.state_dict(), N_LAYERS))
    assert ours.lm_head.weight is ours.tok_emb.weight
    return hf.eval(), ours.eval()


def llama_pair(attn_implementation: str) -> tuple[torch.nn.Module, GPT]:
    hf_cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=D_MODEL, intermediate_size=D_FF, num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS, num_key_value_heads=N_KV_HEADS, max_position_embeddings=MAX_LEN,
        rms_norm_eps=1e-6, rope_theta=500.0, hidden_act="silu", tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, attention_dropout=0.0,
    )
    hf_cfg._attn_implementation = attn_implementation
    hf = transformers.LlamaForCausalLM(hf_cfg)
    randomize_(hf)
    ours = GPT(GPTConfig(
        vocab_size=VOCAB, d_model=D_MODEL, n_layers=N_LAYERS, n_heads=N_HEADS, n_kv_heads=N_KV_HEADS,
        d_ff=D_FF, max_seq_len=MAX_LEN, position="rope", rope_theta=500.0, norm="rmsnorm", norm_eps=1e-6,
        ffn="swiglu", bias=False, pre_norm=True, tie_weights=False, dropout=0.0,
    ))
    load_exactly(ours, from_llama(hf.state_dict(), N_LAYERS))
    return hf.eval(), ours.eval()


PAIRS = {"gpt2": gpt2_pair, "llama": llama_pair}


# --- parity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", list(PAIRS))
def test_logits_match_hugging_face(arch: str, attn_implementation: str) -> None:
    hf, ours = PAIRS[arch](attn_implementation)
    x = torch.randint(0, VOCAB, (3, 20))
    with torch.no_grad():
        expected = hf(input_ids=x).logits
        actual = ours(x).logits
    assert expected.std() > 1.0  # far from uniform: the comparison has teeth
    assert_close(actual, expected, **TOLERANCE)


@pytest.mark.parametrize("arch", list(PAIRS))
def test_right_padded_logits_match_hugging_face(arch: str) -> None:
    """Both models, given the same right-padded batch and mask, agree at the real positions."""
    hf, ours = PAIRS[arch]("eager")
    x = torch.randint(0, VOCAB, (2, 12))
    mask = torch.ones_like(x)
    mask[1, 7:] = 0
    with torch.no_grad():
        expected = hf(input_ids=x, attention_mask=mask).logits
        actual = ours(x, attention_mask=mask).logits
    real = mask.bool()
    assert_close(actual[real], expected[real], **TOLERANCE)


@pytest.mark.parametrize("arch", list(PAIRS))
def test_greedy_generation_matches_hugging_face(arch: str) -> None:
    """Our KV-cached greedy decoding picks the same tokens as HF's (which uses its own cache)."""
    hf, ours = PAIRS[arch]("eager")
    prompt = torch.randint(0, VOCAB, (2, 5))
    with torch.no_grad():
        expected = hf.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, min_new_tokens=8,
            do_sample=False, pad_token_id=0, eos_token_id=None,
        )
    assert torch.equal(ours.generate(prompt, max_new_tokens=8, temperature=0), expected)
