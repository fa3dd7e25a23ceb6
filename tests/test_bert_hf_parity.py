"""Numerical parity of the bert plugin with Hugging Face ``BertForMaskedLM`` at tiny size: the same weights
copied across, ``assert_close`` on the logits (with and without padding, with token types), and on the
pooled ``encode`` output against ``BertModel``'s last hidden state."""
from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from plugins.bert import Bert, BertConfig
from plugins.bert.hf_convert import from_hf_state_dict

transformers = pytest.importorskip("transformers")

VOCAB, D_MODEL, N_LAYERS, N_HEADS, D_FF, MAX_LEN, TYPES = 64, 32, 2, 4, 48, 24, 2
TOLERANCE = dict(rtol=1e-5, atol=1e-5)  # fp32


def randomize_(model: torch.nn.Module, std: float = 0.2) -> None:
    """Larger random weights than HF's init (and non-trivial LayerNorms), so a swapped tensor cannot hide."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.copy_(1.0 + std * torch.randn_like(p) if name.endswith("weight") else std * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
        # HF keeps the decoder bias and cls.predictions.bias as one tensor; give it a value of its own.
        model.cls.predictions.bias.normal_(0.0, std)


def bert_pair(attn_implementation: str) -> tuple[torch.nn.Module, Bert]:
    hf_cfg = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS,
        intermediate_size=D_FF, hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        max_position_embeddings=MAX_LEN, type_vocab_size=TYPES, layer_norm_eps=1e-12, pad_token_id=0,
        tie_word_embeddings=True,
    )
    hf_cfg._attn_implementation = attn_implementation
    hf = transformers.BertForMaskedLM(hf_cfg)
    randomize_(hf)
    ours = Bert(BertConfig(
        vocab_size=VOCAB, d_model=D_MODEL, n_layers=N_LAYERS, n_heads=N_HEADS, d_ff=D_FF, dropout=0.0,
        max_seq_len=MAX_LEN, type_vocab_size=TYPES, norm_eps=1e-12, activation="gelu", pre_norm=False,
    ))
    state = {k: v.clone() for k, v in from_hf_state_dict(hf.state_dict(), ours.config).items()}
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    assert ours.mlm_head.decoder.weight is ours.tok_emb.weight
    return hf.eval(), ours.eval()


def inputs(batch: int = 3, seq: int = 20) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (batch, seq), generator=g)
    types = (torch.arange(seq) >= seq // 2).long().expand(batch, seq).clone()  # two segments
    return {"input_ids": ids, "token_type_ids": types}


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_masked_lm_logits_match_hugging_face(attn_implementation: str) -> None:
    hf, ours = bert_pair(attn_implementation)
    x = inputs()
    with torch.no_grad():
        expected = hf(**x).logits
        got = ours(**x).logits
    assert_close(got, expected, **TOLERANCE)
    assert got.std() > 0.5  # far from uniform: the comparison means something


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_padded_batch_matches_hugging_face_at_real_tokens(attn_implementation: str) -> None:
    hf, ours = bert_pair(attn_implementation)
    x = inputs()
    lengths = torch.tensor([20, 13, 6])
    mask = (torch.arange(20)[None] < lengths[:, None]).long()  # (B, T) right padding
    x["input_ids"] = x["input_ids"].masked_fill(mask == 0, 0)
    with torch.no_grad():
        expected = hf(**x, attention_mask=mask).logits
        got = ours(**x, attention_mask=mask).logits
    real = mask.bool()
    # Padded query rows are never scored; HF and we treat them differently (we let them see themselves).
    assert_close(got[real], expected[real], **TOLERANCE)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_encode_matches_hugging_face_hidden_states(pooling: str) -> None:
    hf, ours = bert_pair("sdpa")
    x = inputs()
    mask = torch.ones_like(x["input_ids"])
    mask[1, 15:] = 0
    with torch.no_grad():
        h = hf.bert(**x, attention_mask=mask).last_hidden_state  # (B, T, C)
        got = ours.encode(x["input_ids"], mask, x["token_type_ids"], pooling=pooling)
    if pooling == "cls":
        expected = h[:, 0]
    else:
        w = mask[..., None].float()
        expected = (h * w).sum(1) / w.sum(1)
    assert got.shape == (3, D_MODEL)
    assert_close(got, expected, **TOLERANCE)


def test_parameter_counts_match() -> None:
    hf, ours = bert_pair("sdpa")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in hf.parameters())
