"""Checkpoints of the plugins the composable stack replaced (gpt, moe, sparse, rnn) still load and give
the same logits. The fixtures were written by the old code (commit f163c32) with the logits it computed."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from framework.checkpoint import load_checkpoint
from framework.registry import get_plugin

FIXTURES = Path(__file__).parent / "fixtures" / "legacy_checkpoints"


@pytest.mark.parametrize("old_plugin", ["gpt", "moe", "sparse", "rnn"])
def test_legacy_checkpoint_loads_into_the_decoder_stack_with_the_same_logits(old_plugin: str) -> None:
    path = FIXTURES / f"{old_plugin}.ckpt"
    model, hparams = load_checkpoint(path)
    assert hparams["plugin_name"] == "decoder"
    saved = torch.load(path, weights_only=True)
    with torch.no_grad():
        logits = model(saved["archlab_test_inputs"]).logits
    torch.testing.assert_close(logits, saved["archlab_test_logits"])


def test_a_retired_plugin_name_says_where_it_went() -> None:
    with pytest.raises(ValueError, match="plugin 'gpt' is now part of plugin 'decoder'.*model=<preset>"):
        get_plugin("gpt")
