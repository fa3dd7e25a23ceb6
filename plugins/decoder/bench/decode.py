"""``archlab bench decode``: prefill and decode speed of a study's variants at a long context, with the decode
state each carries there: what a hybrid keeps of its recurrent parts' inference advantage.

Each variant is the model a study's sweep trains (``conf/experiment/<study>.yaml`` with ``+study/<study>=<variant>``,
composed as ``archlab train`` composes it; ``model.max_seq_len`` raised to the context plus the new tokens), with
its initial weights: speed does not depend on what the weights learned. Timing follows ``generate``'s greedy path
call for call (``greedy_decode`` yields the same tokens): the prefill is the prompt as one forward against a fresh
state sized for the whole output, and each of the N decode steps, timed by themselves, feeds one token against
that state. (Subtracting a 1-token generation from an N-token one would leave the decode time at the mercy of the
prefill's noise, which at 16k exceeds 64 decode steps.) Every variant is timed interleaved, round by round, and its
ratio to the baseline variant is paired by round (median and IQR), so load on a shared machine cancels.
State: the bytes of every tensor in the decode state after the prefill (KV caches sized for the context alone,
recurrent states), per sequence.

    archlab bench decode                                  # experiment=hybrids, every variant, 4k context, 64 new
    archlab bench decode --variants attention,griffin --context 1k --new-tokens 16 --rounds 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import OmegaConf

from framework.bench.common import (Column, Timing, comma_list, describe_device, format_table, paired,
                                    setup_device, synchronize, token_count)

CONF = Path(__file__).resolve().parents[3] / "conf"


@dataclass
class DecodeConfig:
    study: str = "hybrids"
    variants: tuple[str, ...] = ()     # empty: every variant of the study's sweep
    baseline: str = "attention"
    context: int = 4096
    new_tokens: int = 64
    batch: int = 1
    rounds: int = 3
    overrides: tuple[str, ...] = ()    # more Hydra overrides for every variant (e.g. model.d_model=32)
    device: str = "auto"
    threads: int | None = None
    all_variants: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        for name in ("context", "new_tokens", "batch", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        self.all_variants = study_variants(self.study)
        self.variants = self.variants or self.all_variants
        for v in self.variants:
            if v not in self.all_variants:
                raise ValueError(f"variants: {v!r} is not one of {', '.join(self.all_variants)} (conf/study/{self.study})")
        if self.baseline not in self.variants:
            raise ValueError(f"baseline: {self.baseline!r} is not among the variants ({', '.join(self.variants)})")


def study_variants(study: str) -> tuple[str, ...]:
    """The variants ``archlab train -m experiment=<study>`` sweeps over (its ``+study/<study>`` parameter)."""
    path = CONF / "experiment" / f"{study}.yaml"
    studies = sorted(p.parent.name for p in (CONF / "study").glob("*/*.yaml"))
    if not path.is_file() or study not in studies:
        raise ValueError(f"study: {study!r} is not a study with variants; known: {', '.join(sorted(set(studies)))}")
    params = yaml.safe_load(path.read_text())["hydra"]["sweeper"]["params"]
    return comma_list(str(params[f"+study/{study}"]))


def build_variant(cfg: DecodeConfig, variant: str) -> torch.nn.Module:
    from hydra import compose, initialize_config_module

    from framework.hydra_search_path import register_search_path
    from framework.registry import get_plugin, make_config

    register_search_path()
    with initialize_config_module(config_module="conf", version_base="1.3"):
        composed = compose(config_name="train", overrides=[
            f"experiment={cfg.study}", f"+study/{cfg.study}={variant}",
            f"model.max_seq_len={cfg.context + cfg.new_tokens}", *cfg.overrides])
    model_cfg = OmegaConf.to_container(composed.model, resolve=True)
    name = model_cfg.pop("plugin")
    torch.manual_seed(0)
    return get_plugin(name).build(make_config(name, **model_cfg)).eval()


def tensor_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of every distinct tensor storage reachable from ``obj`` (a decode state: caches, recurrent states)."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        key = obj.untyped_storage().data_ptr()
        if key in seen:
            return 0
        seen.add(key)
        return obj.untyped_storage().nbytes()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return sum(tensor_bytes(v, seen) for v in vars(obj).values())
    if hasattr(obj, "__slots__"):
        return sum(tensor_bytes(getattr(obj, s), seen) for s in obj.__slots__ if hasattr(obj, s))
    return 0


def state_bytes(model: torch.nn.Module, prompt: torch.Tensor) -> int:
    """The decode state after prefilling ``prompt``, caches sized for the prompt alone, per sequence."""
    state = model.new_state()
    if hasattr(state, "reserve"):
        state.reserve(prompt.shape[1])
    with torch.inference_mode():
        model(prompt, state=state)
    return tensor_bytes(state) // prompt.shape[0]


@dataclass
class Measured:
    prefill: list[float] = field(default_factory=list)   # seconds of the prompt's forward
    decode: list[float] = field(default_factory=list)    # seconds per decode step
    params: int = 0
    state: int = 0


def greedy_decode(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int,
                  device: torch.device) -> tuple[torch.Tensor, float, float]:
    """``model.generate(prompt, new_tokens, temperature=0)``'s tokens, with the seconds of its prefill (the prompt's
    forward and first token) and of each later decode step on average."""
    b, n = prompt.shape
    tokens = prompt.new_empty(b, n + new_tokens)
    tokens[:, :n] = prompt
    with torch.inference_mode():
        state = model.new_state()
        if hasattr(state, "reserve"):
            state.reserve(n + new_tokens)
        synchronize(device)
        start = time.perf_counter()
        tokens[:, n] = model(prompt, state=state).logits[:, -1, :].argmax(-1)
        synchronize(device)
        prefilled = time.perf_counter()
        for i in range(n + 1, n + new_tokens):
            tokens[:, i] = model(tokens[:, i - 1 : i], state=state).logits[:, -1, :].argmax(-1)
        synchronize(device)
        done = time.perf_counter()
    return tokens, prefilled - start, (done - prefilled) / max(new_tokens - 1, 1)


def run(cfg: DecodeConfig, log=lambda _: None) -> dict[str, Any]:  # noqa: ANN001
    device = setup_device(cfg.device, cfg.threads)
    models = {v: build_variant(cfg, v).to(device) for v in cfg.variants}
    vocab = min(m.tok_emb.num_embeddings for m in models.values())
    prompt = torch.randint(0, vocab, (cfg.batch, cfg.context), generator=torch.Generator().manual_seed(0))
    prompt = prompt.to(device)
    out = {v: Measured(params=sum(p.numel() for p in m.parameters()), state=state_bytes(m, prompt))
           for v, m in models.items()}
    for model in models.values():  # warm-up: one short generation each
        greedy_decode(model, prompt[:, :64], 2, device)
    for r in range(cfg.rounds):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        log(f"round {r + 1}/{cfg.rounds}: {', '.join(order)}")
        for v in order:
            _, prefill, step = greedy_decode(models[v], prompt, 1 + cfg.new_tokens, device)
            out[v].prefill.append(prefill)
            out[v].decode.append(step)
    return {"config": cfg, "device": describe_device(device), "measured": out}


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    cfg: DecodeConfig = res["config"]
    measured: dict[str, Measured] = res["measured"]
    base = measured[cfg.baseline]
    out = []
    for v, m in measured.items():
        row = {"variant": v, "params": m.params, "state_mib": m.state / 2**20,
               "prefill_tps": cfg.batch * cfg.context / statistics.median(m.prefill),
               "decode_tps": cfg.batch / statistics.median(m.decode)}
        if v != cfg.baseline:
            # Decode speed-up over the baseline: its seconds per step / ours, paired by round.
            ratio = paired(Timing(base.decode), Timing(m.decode))
            row["decode_x"], row["decode_iqr"] = ratio.median, ratio.iqr
            row["prefill_x"] = paired(Timing(base.prefill), Timing(m.prefill)).median
        out.append(row)
    return out


def report(res: dict[str, Any]) -> str:
    cfg: DecodeConfig = res["config"]
    ctx = f"{cfg.context // 1024}k" if cfg.context % 1024 == 0 else str(cfg.context)
    head = [f"# archlab bench decode: experiment={cfg.study}, prompt {cfg.context} tokens, {cfg.new_tokens} new, "
            f"batch {cfg.batch}, greedy, {cfg.rounds} rounds; {res['device']}",
            f"# x {cfg.baseline}: its seconds / the variant's (paired by round); state = decode state after the "
            "prompt, per sequence"]
    table = format_table(rows(res), [
        Column("variant", "variant", align="<"), Column("params", "params", "{:,}"),
        Column("prefill_tps", f"prefill tok/s @{ctx}", "{:,.0f}"), Column("prefill_x", "x", "{:.2f}"),
        Column("decode_tps", f"decode tok/s @{ctx}", "{:,.1f}"), Column("decode_x", "x", "{:.2f}"),
        Column("decode_iqr", "IQR", align="<"), Column("state_mib", f"state MiB @{ctx}", "{:,.2f}")])
    return "\n".join([*head, "", table])


def parse_args(argv: Sequence[str]) -> DecodeConfig:
    d = DecodeConfig.__dataclass_fields__
    p = argparse.ArgumentParser(prog="archlab bench decode", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", default=d["study"].default, help="a conf/experiment with conf/study/<study> variants")
    p.add_argument("--variants", default="", help="comma list (default: every variant of the study's sweep)")
    p.add_argument("--baseline", default=d["baseline"].default)
    p.add_argument("--context", default="4k", help="prompt tokens, e.g. 4096 or 4k")
    for name in ("new_tokens", "batch", "rounds"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=d[name].default)
    p.add_argument("--override", action="append", default=[], help="a Hydra override for every variant (repeatable)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    try:
        return DecodeConfig(study=args.study, variants=comma_list(args.variants), baseline=args.baseline,
                            context=token_count("context", args.context), new_tokens=args.new_tokens, batch=args.batch,
                            rounds=args.rounds, overrides=tuple(args.override), device=args.device,
                            threads=args.threads)
    except ValueError as err:
        p.error(str(err))


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    print(report(run(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
