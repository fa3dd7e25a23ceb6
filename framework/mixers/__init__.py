"""Token and channel mixers of the composable stack, discovered through the ``archlab.mixers`` entry points.

Built-ins: ``attention.py`` (dense and sparse kinds), ``recurrent.py`` (lstm, gru, elman), ``ssm.py`` (mamba,
mamba2; scans in ``ssm_scan.py``), ``rglru.py`` (Griffin's RG-LRU), ``feedforward.py`` (mlp, swiglu, geglu, moe, none). The contract is ``spec.py``.
"""
from .registry import discover_mixers, get_mixer, list_mixers
from .spec import (
    ChannelMixer,
    InitialisesWeights,
    LayerContext,
    MixerResult,
    MixerSpec,
    ReportsStats,
    TokenMixer,
)

__all__ = [
    "ChannelMixer", "InitialisesWeights", "LayerContext", "MixerResult", "MixerSpec", "ReportsStats", "TokenMixer",
    "discover_mixers", "get_mixer", "list_mixers",
]
