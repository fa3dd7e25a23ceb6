"""``archlab bench mixers``: every token mixer of the decoder stack, and Hugging Face's Mamba, Mamba-2 and
RecurrentGemma at the same sizes, in one table: training tokens/s, generation tokens/s and decode-state bytes per
sequence, fp32 and bf16, all timed interleaved round by round in one run; then the ratios issues 13 and 14 target, each
with the spread (IQR) of its per-round ratios, a verdict line, and for a missed target what holds it back
(torch.profiler's top operators of one step of each side, measured in the same run).

Rows (every model is ``build_model("decoder", ...)`` at --d-model / --layers / --heads, pre-norm RMSNorm residual
blocks, no biases, tied embeddings, channel mixer --ffn (default none: the token mixer alone)):

  attention, sliding_window   RoPE; dense SDPA / a --window local band; decode with a KV cache
  lstm, gru                   the recurrent cells (hidden = d_model); decode carries (h, c) / h
  mamba                       the ``mamba`` preset's mixer (d_state 16, expand 2, d_conv 4)
  mamba2                      the ``mamba2`` preset's mixer (d_state 64, heads of 32 channels)
  rglru                       Griffin's recurrent block (skipped, with a note, when the mixer does not import)
  mla                         DeepSeek's latent attention (latent d_model / 4, RoPE on half a head); absorbed decode
  gated_deltanet              Gated DeltaNet (heads of d_model / heads); linear_attention: no decay
  rglru (RecurrentGemma)      ours shaped as RecurrentGemma (rglru + geglu, exact GELU, biases, embedding scale,
                              logit soft-cap): the twin of HF RecurrentGemma, converted by hf_recurrent_gemma.py
  HF Mamba (slow path)        ``MambaForCausalLM`` of the same model (plugins/decoder/hf_mamba.py: hf_from_stack):
                              no CUDA kernels, so its scan is a Python loop over time
  HF Mamba + mambapy          the same with ``use_mambapy=True`` (the ``mambapy`` package's parallel scan)
  HF Mamba-2 (torch path)     ``Mamba2ForCausalLM`` of our mamba2 model (its chunked torch_forward)
  HF RecurrentGemma           ``RecurrentGemmaForCausalLM`` with ``block_types=["recurrent"]`` (RG-LRU + MLP blocks)

Training: one step = forward + fp32 cross-entropy + backward + AdamW on a (--batch, seq) batch, for each of
--seqs. Generation, batch 1, for each context length L of --gen-lengths: a prompt of L - g tokens is prefilled
(untimed), then g = min(--gen-tokens, L // 2) tokens are decoded greedily one at a time (timed); the state bytes are
every tensor of the decode state after those L tokens (``new_state()``'s layer states for ours, the cache or the
modules' recurrent states for Hugging Face). Each timed round restarts from the prefilled state (ours: a shallow
copy, RecurrentGemma: its modules' state tensors put back), except HF Mamba / Mamba-2, whose cache is updated in
place: they continue from it (recurrent, so a per-token cost independent of the position).

    archlab bench mixers                                         # the issue's size: d256 L4, batch 8, seq 256/1k/4k
    archlab bench mixers --d-model 128 --layers 2 --batch 4 --seqs 256,1024 --gen-lengths 256,1024 --steps 3
    archlab bench mixers --mixers attention,mamba --hf mamba --dtype fp32 --threads 1
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from framework import build_model
from framework.nn.kv_cache import KVCache
from framework.bench.common import (DTYPES, Column, Ratio, Timing, add_device_args, autocast, comma_list,
                                    describe_device, format_table, make_train_step, paired, quartiles,
                                    require_positive, setup_device, synchronize, time_call, time_interleaved,
                                    token_loss)

MIXERS = ("attention", "sliding_window", "mla", "lstm", "gru", "mamba", "mamba2", "rglru", "gated_deltanet",
          "linear_attention")
ATTENTION_KINDS = ("attention", "sliding_window", "mla")  # RoPE; their decode state is a KV (or latent) cache
HF_MODELS = ("mamba", "mambapy", "mamba2", "recurrentgemma")
HF_LABELS = {"mamba": "HF Mamba (slow path)", "mambapy": "HF Mamba + mambapy", "mamba2": "HF Mamba-2 (torch path)",
             "recurrentgemma": "HF RecurrentGemma"}
RG_TWIN = "rglru_rg"  # key of ours shaped as RecurrentGemma
TARGETS = {  # the targets: ours / reference speed
    "mamba_vs_hf": 5.0, "mamba_vs_mambapy": 1.5, "mamba2_vs_hf": 1.0, "rglru_vs_hf": 1.0, "mamba_gen_vs_attention": 2.0,
    "mla_gen_vs_attention": 1.0, "gdn_vs_attention": 10.0,  # issue 14
}
MLA_CACHE_TARGET = 0.25  # mla's cache bytes per token at most this share of MHA's (issue 14)
# Training steps known to grow ~T^2 before two lengths are measured: dense attention, and HF Mamba's slow path
# (each step's slice of the (b, d, T, n) discretised tensors has a select_backward that materialises a full-size
# gradient, so its backward writes O(T^2 b d n) bytes).
QUADRATIC_TRAINING = ("attention", "hf_mamba")
FLAT_TOLERANCE = 0.0     # recurrent state: bytes must be equal at every length
LINEAR_TOLERANCE = 0.02  # KV cache: bytes / tokens equal within 2% at every length


@dataclass
class BenchConfig:
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 8
    batch: int = 8                    # training batch (sequences); generation runs at batch 1
    seqs: tuple[int, ...] = (256, 1024, 4096)
    gen_lengths: tuple[int, ...] = (256, 1024, 4096)
    gen_tokens: int = 32              # tokens decoded (timed) at each context length (at most half of it)
    vocab: int = 256                  # byte-level
    window: int = 256                 # sliding_window's band
    ffn: str = "none"                 # channel mixer of our mixer rows: none, mlp, swiglu, geglu
    mixers: tuple[str, ...] = MIXERS
    hf: tuple[str, ...] = HF_MODELS
    dtypes: tuple[str, ...] = ("fp32", "bf16")
    steps: int = 3                    # timed rounds; each round runs every variant once
    warmup: int = 1
    ratio_seq: int = 1024             # the training length the ours-vs-HF targets are read at
    profile: str = "missed"           # torch.profiler breakdown for: missed targets, all targets, none
    max_step_s: float = 120.0         # a training step above this (measured, or predicted from shorter lengths) is
                                      # not repeated, nor run at longer lengths (HF Mamba's slow path is O(T^2))
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        require_positive(self, "d_model", "n_layers", "n_heads", "batch", "gen_tokens", "window", "steps")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.vocab < 2:
            raise ValueError(f"vocab must be >= 2, got {self.vocab}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.n_heads}) into an even "
                             "head size (RoPE)")
        for name, lengths, low in (("seqs", self.seqs, 1), ("gen-lengths", self.gen_lengths, 2)):
            if not lengths or min(lengths) < low:
                given = ",".join(map(str, lengths)) or "(none)"
                raise ValueError(f"{name}: give one or more lengths >= {low}, got {given}")
        for name, values, known in (("mixers", self.mixers, MIXERS), ("hf", self.hf, HF_MODELS),
                                    ("dtype", self.dtypes, tuple(DTYPES))):
            for v in values:
                if v not in known:
                    raise ValueError(f"{name}: {v!r} is not one of {', '.join(known)}")
        if not self.dtypes:
            raise ValueError("dtype: give at least one of " + ", ".join(DTYPES))
        if not self.mixers and not self.hf:
            raise ValueError("nothing to run: --mixers and --hf are both empty")
        if self.ffn not in ("none", "mlp", "swiglu", "geglu"):
            raise ValueError(f"ffn: {self.ffn!r} is not one of none, mlp, swiglu, geglu")
        if not self.max_step_s > 0:
            raise ValueError(f"max-step-s must be > 0, got {self.max_step_s}")
        if self.profile not in ("missed", "all", "none"):
            raise ValueError(f"profile: {self.profile!r} is not one of missed, all, none")

    def gen_tokens_at(self, length: int) -> int:
        return max(1, min(self.gen_tokens, length // 2))


# --- models ----------------------------------------------------------------------------------------


def mamba2_head_dim(d_model: int) -> int:
    """The mamba2 preset's 32-channel heads, or one head when expand * d_model is not a multiple of 32."""
    return 32 if (2 * d_model) % 32 == 0 else 2 * d_model


def ours_kwargs(cfg: BenchConfig, mixer: str, ffn: str | None = None) -> dict[str, Any]:
    """``build_model("decoder", **out)`` for a stack of ``mixer`` layers at the benchmark's size."""
    kw: dict[str, Any] = dict(
        vocab_size=cfg.vocab, d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
        max_seq_len=max(*cfg.seqs, *cfg.gen_lengths), dropout=0.0, norm="rmsnorm", bias=False, tie_weights=True,
        mixer=mixer, ffn=cfg.ffn if ffn is None else ffn, position="rope" if mixer in ATTENTION_KINDS else "none",
    )
    if mixer == "sliding_window":
        kw["sparse"] = {"window": cfg.window}
    if mixer == "mamba2":
        kw["ssm"] = {"d_state": 64, "head_dim": mamba2_head_dim(cfg.d_model)}
    if mixer == "mla":  # DeepSeek-V2's proportions, scaled: a latent of d_model / 4, RoPE on half a head
        head = cfg.d_model // cfg.n_heads
        kw["mla"] = {"kv_lora_rank": max(1, cfg.d_model // 4), "qk_rope_head_dim": max(2, head // 2 // 2 * 2)}
    return kw


def rg_twin_kwargs(cfg: BenchConfig) -> dict[str, Any]:
    """Ours shaped as RecurrentGemma with recurrent blocks only (what hf_recurrent_gemma.hf_config maps)."""
    from plugins.decoder.hf_recurrent_gemma import hf_embed_scale

    return dict(
        vocab_size=cfg.vocab, d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
        max_seq_len=max(*cfg.seqs, *cfg.gen_lengths), dropout=0.0, mixer="rglru", ffn="geglu", position="rope",
        norm="rmsnorm", norm_eps=1e-6, bias=True, tie_weights=True, embed_scale=hf_embed_scale(cfg.d_model),
        logit_softcap=30.0, rglru={"activation": "gelu"},
    )


def mixer_available(name: str) -> str | None:
    """None when token mixer ``name`` is registered and imports, else why not."""
    from framework.mixers import discover_mixers

    found = discover_mixers()
    if name in found.mixers:
        return None
    return found.errors.get(name, f"mixer {name!r} is not registered (archlab plugins lists the mixers)")


def mambapy_available() -> bool:
    try:
        import mambapy  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Variant:
    """One row's model; ``twin`` is the key of ours at the same size (HF rows)."""

    key: str
    label: str
    model: nn.Module | None
    hf: str | None = None   # None: ours; else the HF_MODELS name
    twin: str | None = None
    note: str = ""

    @property
    def params(self) -> int | None:
        return None if self.model is None else sum(p.numel() for p in self.model.parameters())


def _build(kw: dict[str, Any]) -> nn.Module:
    torch.manual_seed(0)
    return build_model("decoder", **kw)


def build_variants(cfg: BenchConfig) -> dict[str, Variant]:
    """Ours for each mixer, the twins the HF rows need, then the HF rows (skipped ones carry a note)."""
    import transformers

    transformers.logging.set_verbosity_error()  # "fast path not available" and friends, once per model
    out: dict[str, Variant] = {}
    built: dict[str, tuple[dict[str, Any], str]] = {}  # kwargs of the ours rows -> key, to reuse a twin

    def ours(key: str, label: str, kw: dict[str, Any]) -> str:
        for other, (other_kw, _) in built.items():
            if other_kw == kw:
                return other
        out[key] = Variant(key, label, _build(kw))
        built[key] = (kw, label)
        return key

    for mixer in cfg.mixers:
        why = mixer_available(mixer)
        if why is not None:
            out[mixer] = Variant(mixer, mixer, None, note=f"skipped: {why}")
            continue
        ours(mixer, mixer, ours_kwargs(cfg, mixer))

    for name in cfg.hf:
        label = HF_LABELS[name]
        key = f"hf_{name}"
        if name in ("mamba", "mambapy", "mamba2"):
            if name == "mambapy" and not mambapy_available():
                out[key] = Variant(key, label, None, hf=name, note="not installed (pip install mambapy)")
                continue
            mixer = "mamba2" if name == "mamba2" else "mamba"
            twin = ours(f"{mixer}_hf", f"{mixer} (ffn none)", ours_kwargs(cfg, mixer, ffn="none"))
            from plugins.decoder.hf_mamba import hf_from_stack

            model = hf_from_stack(out[twin].model)
            if name == "mambapy":
                model.config.use_mambapy = True
                for layer in model.backbone.layers:
                    layer.mixer.use_mambapy = True
        else:
            why = mixer_available("rglru")
            if why is None:
                try:
                    from plugins.decoder.hf_recurrent_gemma import hf_from_stack as rg_from_stack
                    twin = ours(RG_TWIN, "rglru (RecurrentGemma)", rg_twin_kwargs(cfg))
                    model = rg_from_stack(out[twin].model)
                except (ImportError, ValueError) as err:
                    why = f"{type(err).__name__}: {err}"
            if why is not None:
                out[key] = Variant(key, label, None, hf=name, note=f"skipped: {why}")
                continue
        out[key] = Variant(key, label, model, hf=name, twin=twin)
        p, q = out[key].params, out[twin].params
        out[key].note = (f"same size as {out[twin].label}" if p == q else
                         f"SIZES DIFFER: {p:,} vs {q:,} params of {out[twin].label}: not comparable")
    return out


# --- training and generation ------------------------------------------------------------------------


def train_logits(v: Variant, x: torch.Tensor) -> torch.Tensor:
    if v.hf is None:
        return v.model(x).logits
    return v.model(input_ids=x, use_cache=False).logits


def tensor_bytes(obj: Any, seen: set[int] | None = None, depth: int = 0) -> int:
    """Bytes of every tensor reachable from ``obj`` (attributes, lists, tuples, dicts), each tensor once."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        return obj.numel() * obj.element_size()
    if depth > 4 or isinstance(obj, (nn.Module, str, bytes, int, float, bool, type(None), torch.device, torch.dtype)):
        return 0
    if isinstance(obj, KVCache):  # the positions it holds (its buffer may be larger: reserved, or doubled)
        # its k / v are fresh views: counted directly (a freed view's id is reused by the next one)
        return sum(t.numel() * t.element_size() for t in (obj.k, obj.v) if t is not None)
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, (list, tuple, set)):
        items = obj
    elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] in ("framework", "transformers", "plugins"):
        if type(obj).__name__.endswith("Config"):
            return 0
        items = vars(obj).values()
    else:
        return 0
    return sum(tensor_bytes(item, seen, depth + 1) for item in items)


class Decoder:
    """Batch-1 generation from a prefilled prompt: ``decode()`` runs ``n`` greedy steps; ``state_bytes``
    is measured after the first decode (the prompt + n tokens)."""

    def __init__(self, v: Variant, prompt: torch.Tensor, n: int, device: torch.device, dtype: str) -> None:
        self.v, self.n, self.device, self.dtype = v, n, device, dtype
        self.state_bytes: int | None = None
        model = v.model.eval()
        with torch.no_grad(), autocast(device, dtype):
            if v.hf is None:
                self.memory = model.new_state()
                logits = model(prompt, state=self.memory).logits
            elif v.hf == "recurrentgemma":
                from transformers import DynamicCache

                model._setup_cache(model.config, 1, device, torch.float32)
                self.cache = DynamicCache(config=model.config)
                logits = model(**self._rg_inputs(prompt, 0)).logits
                # its decode state lives in the modules (replaced, never modified, at each step): kept per decoder,
                # so decoders of one model (fp32, bf16) do not share it, and each call restarts from the prefill
                self.rg_blocks = [layer.temporal_block for layer in model.model.layers]
                self.rg_prefill = [(b.conv1d_state, b.rg_lru.recurrent_states) for b in self.rg_blocks]
                self.rg_length = prompt.shape[1]
            else:
                out = model(input_ids=prompt, use_cache=True)
                self.cache, logits = out.cache, out.logits
        self.first = logits[:, -1:].argmax(-1)

    def _rg_inputs(self, ids: torch.Tensor, start: int) -> dict[str, Any]:
        # Positions given and the mask dict prefilled (as generate() does): a recurrent-only RecurrentGemma has no
        # attention layer for DynamicCache to count positions in.
        pos = torch.arange(start, start + ids.shape[1], device=ids.device)[None]
        return dict(input_ids=ids, position_ids=pos, attention_mask={"sliding_attention": None}, use_cache=True,
                    cache=self.cache)

    def decode(self) -> list[torch.Tensor]:
        """The ``n`` greedy tokens, (1, 1) each."""
        model, tok = self.v.model, self.first
        out = []
        with torch.no_grad(), autocast(self.device, self.dtype):
            if self.v.hf is None:
                # Shallow copies keep the prefill intact: layers replace recurrent states, and a KV cache only
                # appends after the prefilled positions (a decode from the same prefill writes them again).
                state = copy.copy(self.memory)
                state.layers = [copy.copy(layer) for layer in self.memory.layers]
                for _ in range(self.n):
                    tok = model(tok, state=state).logits[:, -1:].argmax(-1)
                    out.append(tok)
                measured = lambda: tensor_bytes(state.layers)  # noqa: E731
            elif self.v.hf == "recurrentgemma":
                for b, (conv, h) in zip(self.rg_blocks, self.rg_prefill):
                    b.conv1d_state, b.rg_lru.recurrent_states = conv, h
                for i in range(self.n):
                    tok = model(**self._rg_inputs(tok, self.rg_length + i)).logits[:, -1:].argmax(-1)
                    out.append(tok)
                blocks = self.rg_blocks
                measured = lambda: tensor_bytes([(b.conv1d_state, b.rg_lru.recurrent_states)  # noqa: E731
                                                 for b in blocks])
            else:  # HF Mamba / Mamba-2 update their cache in place: continue from it (a cost independent of position)
                for _ in range(self.n):
                    tok = model(input_ids=tok, cache=self.cache, use_cache=True).logits[:, -1:].argmax(-1)
                    out.append(tok)
                measured = lambda: tensor_bytes(self.cache)  # noqa: E731
        if self.state_bytes is None:
            self.state_bytes = measured()
        return out


# --- profiling: what holds a ratio back ------------------------------------------------------------


def top_ops(fn: Callable[[], Any], device: torch.device, k: int = 4) -> str:
    """One call of ``fn`` under torch.profiler: its operator calls and the top ``k`` operators by self time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    calls = sum(e.count for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:k]
    parts = ", ".join(f"{e.key} {e.self_cpu_time_total / total:.0%} ({e.count}x)" for e in top)
    return f"{total / 1e3:,.1f} ms self time in {calls:,} operator calls; top: {parts}"


# --- the run ---------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    what: str
    target: float
    ratio: Ratio | None = None
    why_not: str | None = None                               # set when the ratio could not be measured
    profile: list[str] = field(default_factory=list)         # "what holds it back" lines
    refs: tuple[str, str, str, str, int] | None = None       # (reference key, ours key, train|gen, dtype, length)
    fallback: str | None = None                              # read at another length than the target's: why
    single: bool = False                                     # one side was timed once (over --max-step-s)

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return f"NOT MEASURED ({self.why_not})"
        r = self.ratio
        if r.median >= self.target:
            text = f"MET: {r.median:.2f}x (IQR {r.iqr}) >= {self.target:g}x"
        elif r.q3 >= self.target:
            text = f"WITHIN NOISE: median {r.median:.2f}x < {self.target:g}x, but the IQR ({r.iqr}) reaches it"
        else:
            text = f"MISSED: {r.median:.2f}x (IQR {r.iqr}) < {self.target:g}x"
        if self.single:
            text += " (one side timed by a single step)"
        if self.fallback:
            text = f"NOT MEASURED there ({self.why_not}); {self.fallback}: {text}"
        return text

    @property
    def met(self) -> bool:
        return self.ratio is not None and self.ratio.median >= self.target


@dataclass
class Result:
    variants: dict[str, Variant]
    rows: list[dict[str, Any]]
    train: dict[int, dict[str, Timing]]      # seq -> "key/dtype" -> seconds per step
    gen: dict[int, dict[str, Timing]]        # context length -> "key/dtype" -> seconds per decode call
    state: dict[int, dict[str, int]]         # context length -> "key/dtype" -> state bytes per sequence
    targets: list[Target]
    device: torch.device
    ratio_seq: int
    gen_length: int
    failed: dict[str, str]                   # "key/dtype" -> why that variant has no numbers in some column


def _log(text: str) -> None:
    print(f"[bench mixers] {text}", file=sys.stderr, flush=True)


def _nearest(values: Sequence[int], want: int) -> int:
    return min(values, key=lambda v: (abs(math.log(v / want)), -v))


def _secs(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.2g}"


def _error(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:90]}{'...' if len(text) > 90 else ''}"


def _fail(failed: dict[str, str], name: str, why: str, error: str | None = None) -> None:
    """Add ``why`` (a phase, then ``error`` when it raised) to ``name``'s note; an error already noted gets
    the phase added in front instead of a second copy."""
    note = failed.get(name, "")
    if error is not None and f": {error}" in note:
        failed[name] = note.replace(f": {error}", f", {why}: {error}", 1)
        return
    text = why if error is None else f"{why}: {error}"
    failed[name] = f"{note}; {text}" if note else text


def _probe(fns: dict[str, Callable[[], Any]], failed: dict[str, str], phase: str, device: torch.device,
           reset: Callable[[str], None] | None = None) -> tuple[dict[str, Callable[[], Any]], dict[str, float]]:
    """Call each fn once (its first warmup call); drop, and record in ``failed``, those that raise.
    Returns the fns that ran and the seconds each probe call took."""
    ok, seconds = {}, {}
    for name, fn in fns.items():
        try:
            seconds[name] = time_call(fn, device)
            ok[name] = fn
        except (RuntimeError, ValueError, NotImplementedError, TypeError) as err:  # a kernel without a bf16 path, OOM
            _fail(failed, name, phase, _error(err))
            _log(f"{name} {phase} failed: {_error(err)}")
            if reset is not None:
                reset(name)
    return ok, seconds


def predicted_step(history: Sequence[tuple[int, float]], seq: int, quadratic: bool) -> float | None:
    """Seconds per step at ``seq`` extrapolated from the steps measured at shorter lengths: with the exponent of
    the last two, else T^2 for models whose step is known to grow quadratically, else T^1."""
    if not history:
        return None
    (t1, s1) = history[-1]
    exponent = 2.0 if quadratic else 1.0
    if len(history) >= 2:
        (t0, s0) = history[-2]
        exponent = min(max(math.log(s1 / s0) / math.log(t1 / t0), 1.0), 3.0)
    return s1 * (seq / t1) ** exponent


def run(cfg: BenchConfig) -> Result:
    device = setup_device(cfg.device, cfg.threads)
    variants = build_variants(cfg)
    live = {k: v for k, v in variants.items() if v.model is not None}
    for v in live.values():
        v.model.to(device)
    gen = torch.Generator().manual_seed(0)
    failed: dict[str, str] = {}  # "key/dtype" -> why its row shows "-" somewhere (failures, steps over budget)
    broken: set[str] = set()     # failed in training: not run at longer lengths

    train_t: dict[int, dict[str, Timing]] = {}
    train_fns_by_seq: dict[int, dict[str, Callable[[], None]]] = {}
    history: dict[str, list[tuple[int, float]]] = {}  # "key/dtype" -> (seq, seconds per step) measured so far
    over_budget: set[str] = set()
    for seq in sorted(cfg.seqs):
        x = torch.randint(0, cfg.vocab, (cfg.batch, seq), generator=gen).to(device)
        y = torch.randint(0, cfg.vocab, (cfg.batch, seq), generator=gen).to(device)
        fns: dict[str, Callable[[], None]] = {}
        for key, v in live.items():
            v.model.train()
            opt = torch.optim.AdamW(v.model.parameters(), lr=1e-4, foreach=True)
            for d in cfg.dtypes:
                name = f"{key}/{d}"
                if name in broken or name in over_budget:
                    continue
                guess = predicted_step(history.get(name, []), seq, quadratic=key in QUADRATIC_TRAINING)
                if guess is not None and guess > cfg.max_step_s:
                    over_budget.add(name)
                    _fail(failed, name, f"training skipped from seq {seq}: ~{_secs(guess)} s/step predicted from "
                                        f"seq {history[name][-1][0]} (> --max-step-s {cfg.max_step_s:g})")
                    continue
                fns[name] = make_train_step(lambda v=v, x=x, y=y: token_loss(train_logits(v, x), y), v.model, opt,
                                            device, d)
        _log(f"training, seq {seq}: {len(fns)} models x dtypes, {max(cfg.warmup, 1)}+{cfg.steps} rounds")
        requested = set(fns)
        fns, probe_s = _probe(fns, failed, f"training at seq {seq}", device,
                              reset=lambda name: live[name.split("/")[0]].model.zero_grad(set_to_none=True))
        slow = {name for name, sec in probe_s.items() if sec > cfg.max_step_s}
        for name in slow:  # one (cold) step is all it gets here, and nothing at longer lengths
            over_budget.add(name)
            _fail(failed, name, f"training from seq {seq}: 1 step only ({_secs(probe_s[name])} s > --max-step-s "
                                f"{cfg.max_step_s:g}), none longer")
            _log(f"{name}: {_secs(probe_s[name])} s for one step at seq {seq}: not repeated")
        broken.update(requested - set(fns))
        timed = {name: fn for name, fn in fns.items() if name not in slow}
        train_t[seq] = time_interleaved(timed, device, cfg.steps, max(cfg.warmup - 1, 0)) if timed else {}
        train_t[seq].update({name: Timing([probe_s[name]]) for name in slow})
        for name, t in train_t[seq].items():
            history.setdefault(name, []).append((seq, t.median))
        train_fns_by_seq[seq] = fns

    gen_t: dict[int, dict[str, Timing]] = {}
    state: dict[int, dict[str, int]] = {}
    decoders_by_len: dict[int, dict[str, Decoder]] = {}
    for length in cfg.gen_lengths:
        n = cfg.gen_tokens_at(length)
        _log(f"generation, context {length}: prefill {length - n}, decode {n} tokens")
        prompt = torch.randint(0, cfg.vocab, (1, length - n), generator=gen).to(device)
        decoders: dict[str, Decoder] = {}
        for key, v in live.items():
            for d in cfg.dtypes:
                try:
                    decoders[f"{key}/{d}"] = Decoder(v, prompt, n, device, d)
                except (RuntimeError, ValueError, NotImplementedError, TypeError) as err:
                    _fail(failed, f"{key}/{d}", f"prefill at {length}", _error(err))
        fns, _ = _probe({k: dec.decode for k, dec in decoders.items()}, failed, f"generation at {length}", device)
        # the probe's decode measured the state bytes; the rest of the warmup, then the timed rounds
        gen_t[length] = time_interleaved(fns, device, cfg.steps, max(cfg.warmup - 1, 0)) if fns else {}
        state[length] = {k: decoders[k].state_bytes for k in fns}
        decoders_by_len[length] = decoders

    ratio_seq = _nearest(cfg.seqs, cfg.ratio_seq)
    gen_length = _nearest(cfg.gen_lengths, 4096)
    targets = measure_targets(cfg, variants, train_t, gen_t, failed, ratio_seq, gen_length)
    if cfg.profile != "none":
        for t in targets:
            if t.ratio is not None and (cfg.profile == "all" or not t.met):
                _log(f"profiling {t.name}")
                t.profile = explain(t, variants, train_fns_by_seq, decoders_by_len, device)

    rows = []
    for d in cfg.dtypes:
        for key, v in variants.items():
            name = f"{key}/{d}"
            note = "; ".join(x for x in (v.note, failed.get(name, "")) if x)
            row: dict[str, Any] = dict(key=key, model=v.label, dtype=d, params=v.params, note=note)
            for seq in cfg.seqs:
                if name in train_t[seq]:
                    row[f"train_{seq}"] = cfg.batch * seq / train_t[seq][name].median
            for length in cfg.gen_lengths:
                if name in gen_t[length]:
                    row[f"gen_{length}"] = cfg.gen_tokens_at(length) / gen_t[length][name].median
                    row[f"state_{length}"] = state[length][name]
            rows.append(row)
    return Result(variants, rows, train_t, gen_t, state, targets, device, ratio_seq, gen_length, failed)


# (target name, description, reference key, ours key, "train" or "gen")
PAIRS = (
    ("mamba_vs_hf", "mamba vs HF Mamba (slow path), training", "hf_mamba", "twin", "train"),
    ("mamba_vs_mambapy", "mamba vs HF Mamba + mambapy, training", "hf_mambapy", "twin", "train"),
    ("mamba2_vs_hf", "mamba2 vs HF Mamba-2 (torch path), training", "hf_mamba2", "twin", "train"),
    ("rglru_vs_hf", "rglru (RecurrentGemma-shaped) vs HF RecurrentGemma, training", "hf_recurrentgemma", "twin",
     "train"),
    ("mamba_gen_vs_attention", "mamba vs dense attention with KV cache, generation tokens/s", "attention", "mamba",
     "gen"),
    ("mla_gen_vs_attention", "mla (absorbed latent cache) vs dense MHA with KV cache, generation tokens/s",
     "attention", "mla", "gen"),
    ("gdn_vs_attention", "gated_deltanet vs dense causal SDPA attention, training", "attention", "gated_deltanet",
     "train_longest"),
)


def _pair_keys(pair: tuple[str, ...], variants: dict[str, Variant]) -> tuple[str | None, str | None, str | None]:
    """(reference key, ours key, why not measurable)."""
    _, _, ref, ours, _ = pair
    v = variants.get(ref)
    if v is None:
        label = HF_LABELS[ref[3:]] if ref.startswith("hf_") else ref
        return None, None, f"{label} not in this run ({'--hf' if ref.startswith('hf_') else '--mixers'})"
    if v.model is None:
        return None, None, f"{v.label}: {v.note}"
    if ours == "twin":
        ours = v.twin
        if variants[ref].params != variants[ours].params:
            return None, None, v.note
    elif ours not in variants:
        return None, None, f"{ours} not in this run (--mixers)"
    elif variants[ours].model is None:
        return None, None, f"{ours}: {variants[ours].note}"
    return ref, ours, None


def pair_ratio(ref: Timing, ours: Timing) -> Ratio:
    """``paired`` round by round; against a side timed once (a step over --max-step-s), that one time over each
    of the other side's rounds."""
    if len(ref.seconds) == len(ours.seconds):
        return paired(ref, ours)
    ratios = [a / b for a in ref.seconds for b in ours.seconds]
    return Ratio(statistics.median(ratios), *quartiles(ratios))


def measure_targets(cfg: BenchConfig, variants: dict[str, Variant], train_t: dict[int, dict[str, Timing]],
                    gen_t: dict[int, dict[str, Timing]], failed: dict[str, str], ratio_seq: int,
                    gen_length: int) -> list[Target]:
    """Each target per dtype, at ``ratio_seq`` (training) or ``gen_length`` (generation); a training pair that
    did not both run there is read at the longest length where they did, and says so."""
    targets = []
    for d in cfg.dtypes:
        for pair in PAIRS:
            name, what, _, _, phase = pair
            train_at = max(cfg.seqs) if phase == "train_longest" else ratio_seq
            phase = "train" if phase == "train_longest" else phase
            where = f"seq {train_at}" if phase == "train" else f"context {gen_length}"
            t = Target(f"{name}/{d}", f"{what} @ {where}, {d}", TARGETS[name])
            ref, ours, t.why_not = _pair_keys(pair, variants)
            targets.append(t)
            if ref is None:
                continue
            a, b = f"{ref}/{d}", f"{ours}/{d}"
            at = train_at if phase == "train" else gen_length
            timings = train_t[at] if phase == "train" else gen_t[at]
            if a not in timings or b not in timings:
                t.why_not = "; ".join(f"{variants[k].label}: {failed.get(f'{k}/{d}', 'not timed')}"
                                      for k in (ours, ref) if f"{k}/{d}" not in timings)
                both = [s for s in sorted(train_t) if a in train_t[s] and b in train_t[s]] if phase == "train" else []
                if not both:
                    continue
                at, timings = both[-1], train_t[both[-1]]
                t.fallback = f"at seq {at}, the longest both ran"
            t.ratio = pair_ratio(timings[a], timings[b])
            t.single = len(timings[a].seconds) == 1 or len(timings[b].seconds) == 1
            t.refs = (ref, ours, phase, d, at)
    return targets


def explain(t: Target, variants: dict[str, Variant], train_fns: dict[int, dict[str, Callable[[], None]]],
            decoders: dict[int, dict[str, Decoder]], device: torch.device) -> list[str]:
    """torch.profiler of one call of each side of ``t`` (a side timed once, over --max-step-s, is not rerun)."""
    ref, ours, phase, d, at = t.refs
    lines = []
    for key in (ours, ref):
        name = f"{key}/{d}"
        fn = train_fns[at].get(name) if phase == "train" else decoders[at][name].decode
        label = f"{variants[key].label} ({'train step' if phase == 'train' else 'decode call'})"
        if phase == "train" and t.single and key == ref:
            lines.append(f"{label}: not profiled (its one step took over --max-step-s)")
            continue
        if phase == "train":
            variants[key].model.train()
        lines.append(f"{label}: {top_ops(fn, device)}")
    return lines


# --- the report ------------------------------------------------------------------------------------


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f}"


def columns(cfg: BenchConfig) -> list[Column]:
    cols = [Column("model", "model", align="<"), Column("dtype", "dtype", align="<"),
            Column("params", "params", "{:,}")]
    cols += [Column(f"train_{s}", f"train tok/s @{s}", "{:,.0f}") for s in cfg.seqs]
    cols += [Column(f"gen_{n}", f"gen tok/s @{n}", "{:,.1f}") for n in cfg.gen_lengths]
    cols += [Column(f"state_{n}", f"state KiB @{n}") for n in cfg.gen_lengths]  # bytes -> KiB in _table_rows
    return cols + [Column("note", "note", align="<")]


def _table_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (_kib(v) if k.startswith("state_") and v is not None else v) for k, v in r.items()} for r in rows]


def state_sizes(res: Result, cfg: BenchConfig, key: str) -> tuple[str, list[int]] | None:
    """(dtype, bytes at each of the sorted --gen-lengths) for the first dtype measured at every length."""
    lengths = sorted(cfg.gen_lengths)
    for d in cfg.dtypes:
        sizes = [res.state[n].get(f"{key}/{d}") for n in lengths]
        if None not in sizes:
            return d, sizes
    return None


def state_shape(sizes: Sequence[int], lengths: Sequence[int]) -> str:
    """"flat", "linear" or "grows" (bytes per token not constant)."""
    if max(sizes) - min(sizes) <= FLAT_TOLERANCE * max(sizes):
        return "flat"
    per_token = [s / n for s, n in zip(sizes, lengths)]
    return "linear" if max(per_token) - min(per_token) <= LINEAR_TOLERANCE * max(per_token) else "grows"


def state_lines(res: Result, cfg: BenchConfig) -> list[str]:
    """Per model: the decode state at each context length, and whether it is flat or grows linearly."""
    lengths = sorted(cfg.gen_lengths)
    lines = [f"decode state per sequence after {', '.join(map(str, lengths))} tokens (fp32 rows unless noted):"]
    for key, v in res.variants.items():
        found = state_sizes(res, cfg, key) if v.model is not None else None
        if found is None:
            continue
        d, sizes = found
        text = ", ".join(_kib(s) for s in sizes) + " KiB" + ("" if d == "fp32" else f" ({d})")
        if len(lengths) < 2:
            shape = "(one length: give two or more --gen-lengths to see the growth)"
        else:
            kind = state_shape(sizes, lengths)
            per_token = statistics.median(s / n for s, n in zip(sizes, lengths))
            shape = {"flat": "flat: O(1) in the generated length",
                     "linear": f"grows linearly: {per_token:,.0f} bytes per token",
                     "grows": "grows, not linearly"}[kind]
            if key == "sliding_window" and kind == "flat":
                shape = f"flat once the context passes the window: the cache keeps its last {cfg.window - 1} keys"
        lines.append(f"  {v.label:<26} {text:<34} {shape}")
    return lines


def flat_verdict(res: Result, cfg: BenchConfig) -> str:
    """Recurrent mixers flat, dense attention linear: one line."""
    lengths = sorted(cfg.gen_lengths)
    shapes = {k: state_shape(found[1], lengths) for k, v in res.variants.items()
              if v.model is not None and v.hf is None and (found := state_sizes(res, cfg, k)) is not None}
    recurrent = {k: s for k, s in shapes.items() if k not in ATTENTION_KINDS or k == "sliding_window"}
    flat = [res.variants[k].label for k, s in recurrent.items() if s == "flat"]
    not_flat = [res.variants[k].label for k, s in recurrent.items() if s != "flat"]
    attn = shapes.get("attention")
    ok = not not_flat and attn in (None, "linear")
    return (f"recurrent decode state flat in the generated length, attention's KV cache linear: "
            f"{'MET' if ok else 'MISSED'}: flat: {', '.join(flat) or '-'}"
            + (f"; NOT flat: {', '.join(not_flat)}" if not_flat else "")
            + (f"; attention's KV cache: {attn}" if attn else "; attention not in this run"))


def report(res: Result, cfg: BenchConfig) -> str:
    import transformers

    n_gen = ", ".join(f"{cfg.gen_tokens_at(n)} at {n}" for n in cfg.gen_lengths)
    lines = [
        f"archlab bench mixers on {describe_device(res.device)}: d_model {cfg.d_model}, {cfg.n_layers} layers, "
        f"{cfg.n_heads} heads, vocab {cfg.vocab}, our channel mixer {cfg.ffn}; transformers {transformers.__version__}",
        f"train tok/s: batch {cfg.batch} x seq, forward + fp32 cross-entropy + backward + AdamW; gen tok/s: batch 1, "
        f"greedy tokens decoded after a prompt of context - g (g: {n_gen}); state: decode-state KiB per sequence "
        "after the context",
        f"{max(cfg.warmup, 1)} warmup + {cfg.steps} timed rounds, every model and dtype interleaved in each round "
        "(medians); bf16/fp16 = torch.autocast over fp32 weights",
        "",
        format_table(_table_rows(res.rows), columns(cfg)),
        "",
        *state_lines(res, cfg),
        "",
        "targets (ratio = reference seconds / ours, paired round by round; IQR = middle half of the per-round ratios):",
    ]
    for t in res.targets:
        lines.append(f"  {t.what}: target >= {t.target:g}x: {t.verdict}")
        if t.profile:
            lines.append("    what holds it back (torch.profiler, one call of each side, same run):" if not t.met
                         else "    profile (torch.profiler, one call of each side, same run):")
            lines += [f"      {p}" for p in t.profile]
    if len(cfg.gen_lengths) > 1:
        lines.append("  " + flat_verdict(res, cfg))
    mla = mla_cache_verdict(res, cfg)
    if mla:
        lines.append("  " + mla)
    return "\n".join(lines)


def mla_cache_verdict(res: Result, cfg: BenchConfig) -> str | None:
    """mla's cache bytes per token against dense MHA's (same d_model and heads), at the longest context."""
    found = {k: state_sizes(res, cfg, k) for k in ("mla", "attention") if k in res.variants}
    if any(v is None for v in found.values()) or len(found) < 2:
        return None
    (d1, mla), (d2, mha) = found["mla"], found["attention"]
    if d1 != d2:
        return None
    n = sorted(cfg.gen_lengths)[-1]
    ratio = mla[-1] / mha[-1]
    verdict = "MET" if ratio <= MLA_CACHE_TARGET else "MISSED"
    return (f"mla cache bytes per token <= {MLA_CACHE_TARGET:g} x dense MHA's: {verdict}: {mla[-1] / n:,.0f} vs "
            f"{mha[-1] / n:,.0f} bytes per token ({d1}), {ratio:.3f}x ({cfg.n_layers} layers, latent "
            f"{max(1, cfg.d_model // 4)} + RoPE key)")


# --- command line ----------------------------------------------------------------------------------


def _lengths(p: argparse.ArgumentParser, flag: str, text: str) -> tuple[int, ...]:
    out = []
    for s in comma_list(text):
        s2 = s.lower()
        mult = 1024 if s2.endswith("k") else 1
        try:
            out.append(int(s2.removesuffix("k")) * mult)
        except ValueError:
            p.error(f"{flag}: {s!r} is not a length (an integer, or e.g. 4k)")
    return tuple(out)


def parse_args(argv: Sequence[str]) -> BenchConfig:
    p = argparse.ArgumentParser(prog="archlab bench mixers", description=" ".join(__doc__.split("\n\n")[0].split()))
    d = BenchConfig()
    p.add_argument("--d-model", type=int, default=d.d_model)
    p.add_argument("--layers", dest="n_layers", type=int, default=d.n_layers)
    p.add_argument("--heads", dest="n_heads", type=int, default=d.n_heads)
    p.add_argument("--batch", type=int, default=d.batch, help="training batch (generation runs at batch 1)")
    p.add_argument("--seqs", default="256,1024,4096", help="comma-separated training lengths (4k = 4096)")
    p.add_argument("--gen-lengths", default="256,1024,4096",
                   help="comma-separated context lengths for generation tok/s and state bytes")
    p.add_argument("--gen-tokens", type=int, default=d.gen_tokens, help="tokens decoded (timed) per context length")
    p.add_argument("--vocab", type=int, default=d.vocab)
    p.add_argument("--window", type=int, default=d.window, help="sliding_window's band")
    p.add_argument("--ffn", default=d.ffn, help="channel mixer of our mixer rows: none (default), mlp, swiglu, geglu")
    p.add_argument("--mixers", default=",".join(MIXERS), help=f"comma-separated: {', '.join(MIXERS)}")
    p.add_argument("--hf", default=",".join(HF_MODELS),
                   help=f"comma-separated Hugging Face references: {', '.join(HF_MODELS)}, or none")
    p.add_argument("--dtype", default=",".join(d.dtypes), help="comma-separated: fp32, bf16, fp16")
    p.add_argument("--steps", type=int, default=d.steps, help="timed rounds (one call of every variant each)")
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--ratio-seq", type=int, default=d.ratio_seq,
                   help="training length the ours-vs-HF targets are read at (the nearest of --seqs)")
    p.add_argument("--max-step-s", type=float, default=d.max_step_s,
                   help="a training step slower than this (measured, or predicted from the shorter --seqs) is not "
                        "repeated, nor run at longer lengths")
    p.add_argument("--profile", default=d.profile, choices=["missed", "all", "none"],
                   help="torch.profiler breakdown of each side for missed targets (default), all, or none")
    add_device_args(p)
    a = p.parse_args(list(argv))
    hf = comma_list(a.hf)
    try:
        return BenchConfig(
            d_model=a.d_model, n_layers=a.n_layers, n_heads=a.n_heads, batch=a.batch,
            seqs=_lengths(p, "--seqs", a.seqs), gen_lengths=_lengths(p, "--gen-lengths", a.gen_lengths),
            gen_tokens=a.gen_tokens, vocab=a.vocab, window=a.window, ffn=a.ffn, mixers=comma_list(a.mixers),
            hf=() if hf == ("none",) else hf, dtypes=comma_list(a.dtype), steps=a.steps, warmup=a.warmup,
            ratio_seq=a.ratio_seq, profile=a.profile, max_step_s=a.max_step_s, device=a.device, threads=a.threads,
        )
    except ValueError as err:
        p.error(str(err))


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    print(report(run(cfg), cfg), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
