"""``archlab bench decode`` at toy sizes: the decode state it reports (O(1) for recurrent mixers, window-bounded
for local attention, linear for dense attention), its table, and its early errors."""
from __future__ import annotations

import pytest
import torch

from framework.bench import benchmarks
from plugins.decoder.bench.decode import (DecodeConfig, build_variant, greedy_decode, main, state_bytes,
                                          tensor_bytes)

TINY = ("model.d_model=32", "model.n_heads=2")


def _state(variant: str, context: int) -> int:
    cfg = DecodeConfig(variants=(variant, "attention"), context=512, new_tokens=1, overrides=TINY)
    model = build_variant(cfg, variant)
    return state_bytes(model, torch.randint(0, 200, (2, context), generator=torch.Generator().manual_seed(0)))


def test_tensor_bytes_counts_each_storage_once():
    a = torch.zeros(256)
    assert tensor_bytes({"x": a, "y": [a[:10], (torch.zeros(8, dtype=torch.float64),)]}) == 1024 + 64


@pytest.mark.parametrize("variant", ["mamba", "rglru"])
def test_a_recurrent_decode_state_does_not_grow_with_the_prompt(variant):
    # Also guards the conv window: a view into the prompt's (b, C, K - 1 + T) input would grow with T.
    assert _state(variant, 64) == _state(variant, 512) < 64 * 1024


def test_attention_state_grows_with_the_prompt_and_a_window_bounds_it():
    assert _state("attention", 512) == 8 * _state("attention", 64)
    # griffin: 4 rglru layers (O(1)) and 2 sliding-window layers whose caches stop at the window (64).
    assert _state("griffin", 256) == _state("griffin", 512) > _state("griffin", 32)


@pytest.mark.parametrize("variant", ["attention", "samba", "jamba"])
def test_the_timed_decode_follows_generates_greedy_path_token_for_token(variant):
    # What is timed must be what generate runs: the prompt's prefill, then one token per step against the state.
    cfg = DecodeConfig(variants=(variant, "attention"), context=96, new_tokens=12, overrides=TINY)
    model = build_variant(cfg, variant)
    prompt = torch.randint(0, 200, (2, 96), generator=torch.Generator().manual_seed(1))
    tokens, prefill, step = greedy_decode(model, prompt, 12, torch.device("cpu"))
    assert torch.equal(tokens, model.generate(prompt, 12, temperature=0.0))
    assert prefill > 0 and step > 0


def test_registered_and_the_cli_prints_every_variant_against_the_baseline(capsys):
    assert "decode" in benchmarks()
    argv = ["--variants", "attention,samba", "--context", "64", "--new-tokens", "4", "--rounds", "1"]
    assert main([*argv, *(a for o in TINY for a in ("--override", o))]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("attention", "samba"))}
    assert set(rows) == {"attention", "samba"} and "decode tok/s @64" in out and "state MiB @64" in out
    assert float(rows["samba"][-1]) > 0 and rows["attention"][3] == "-"  # the baseline has no ratio to itself


@pytest.mark.parametrize("argv, message", [
    (["--variants", "attention,transformer"], "variants: 'transformer' is not one of attention, mamba"),
    (["--variants", "mamba,samba"], "baseline: 'attention' is not among the variants (mamba, samba)"),
    (["--study", "nope"], "study: 'nope' is not a study with variants; known: "),
    (["--context", "lots"], "context: 'lots' is not a number of tokens"),
    (["--new-tokens", "0"], "new-tokens must be >= 1, got 0"),
])
def test_bad_arguments_fail_early_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
