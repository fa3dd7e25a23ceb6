"""Models in and out of archlab: Hugging Face folders (``archlab export format=hf`` / ``archlab import``) and bare
safetensors state dicts. A plugin declares which Hugging Face architectures it maps (``Plugin.hf_architectures``);
this package does the rest generically (docs/interop.md)."""
from .architecture import HFArchitecture, NotConvertible, renames

__all__ = ["HFArchitecture", "NotConvertible", "renames"]
