"""Quantization of every built-in architecture through torchao: post-training (``archlab quantize``) and
quantization-aware training (``archlab train quantization=qat_*``). See docs/quantization.md."""
from .apply import QuantizationReport, convert_qat, prepare_qat, quantize_model
from .config import METHODS, QuantizationConfig, quantization_config
from .plan import Decision, plan
from .qat_callback import QuantizationAwareTraining

__all__ = ["METHODS", "Decision", "QuantizationAwareTraining", "QuantizationConfig", "QuantizationReport",
           "convert_qat", "plan", "prepare_qat", "quantization_config", "quantize_model"]
