"""The log keys the report and the dashboard read, and the rules that pick columns: defined once here."""
from __future__ import annotations

import re

STEP = "trainer/global_step"      # Lightning's step: a step's train and val values share it (wandb's _step does not)
RUNTIME = "_runtime"              # wandb's seconds since the run started: the wall-clock axis
TRAIN_LOSS = "train/loss"
VAL_LOSS = "val/loss"
VAL_BPB = "val/bpb"               # bits per byte of raw text; older runs (and non-text data) lack it
TOKENS_PER_SEC = "perf/tokens_per_sec"
PARAMS = "model/params"
ACTIVE_PARAMS_SUFFIX = "params/active"  # MoE routing metrics: moe/params/active, bert/moe/params/active, ...

# Families the core logs for every run; the rest (moe/, rnn/, ssm/, t5/, ...) come from plugins and mixers.
CORE_PREFIXES = ("train/", "val/", "perf/", "model/", "trainer/", "grad_norm/", "attn/", "resid/", "epoch")
# The last part of a per-layer (per-bucket, per-time-segment) value: the headline is the aggregate beside it.
_PER_PART = re.compile(r"/(layer|bucket|t)\d+$")


def is_headline(key: str) -> bool:
    """A plugin metric worth a table column: an aggregate (``moe/load_cv/mean``,
    ``t5/rel_bias_encoder/near_minus_far``), not a per-layer value, not a core key, not a parameter count (those
    have their own columns)."""
    return not (key.startswith(CORE_PREFIXES) or key.startswith("_") or _PER_PART.search(key)
                or key.endswith(("params/active", "params/total")))


# Scores where more is better (accuracy, exact match, recall): "best" is the highest; for losses the lowest.
_HIGHER_IS_BETTER = re.compile(r"(^|/|_)(acc|accuracy|exact_match|recall)(/|_|$)")


def higher_is_better(key: str) -> bool:
    """``val/acc``, ``val/exact_match``, ``val/generated_exact_match``: higher is better; ``val/loss``: lower."""
    return bool(_HIGHER_IS_BETTER.search(key))
