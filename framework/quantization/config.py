"""What to quantize and how: one typed config (the ``quantization`` group of ``conf/``), one table of methods."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping

from framework.config_schema import ConfigError, validate_config

Kind = Literal["none", "ptq", "qat"]


@dataclass(frozen=True)
class Method:
    """A quantization method: post-training (``archlab quantize``) or quantization-aware (``archlab train``)."""

    kind: Kind
    weight_bits: int  # 0: nothing quantized
    dynamic_activations: bool  # int8 activations quantized per token at run time
    grouped: bool  # per-group scales along the input dimension (group_size applies)
    ptq_twin: str | None = None  # the post-training method a QAT method converts to
    summary: str = ""


METHODS: dict[str, Method] = {
    "none": Method("none", 0, False, False, summary="full precision"),
    "int8_weight_only": Method("ptq", 8, False, False, summary="int8 weights, one scale per output row"),
    "int8_dynamic": Method("ptq", 8, True, False, summary="int8 weights per row + int8 activations per token"),
    "int4_weight_only": Method("ptq", 4, False, True, summary="int4 weights, one scale per group of inputs"),
    "int8_dynamic_int4_weight": Method(
        "ptq", 4, True, True, summary="int4 weights per group + int8 activations per token (QAT's target)"),
    "qat_int8_dynamic_int4_weight": Method(
        "qat", 4, True, True, ptq_twin="int8_dynamic_int4_weight",
        summary="fake-quantized int8 activations and int4 weights in training, converted at the end"),
    "qat_int4_weight_only": Method(
        "qat", 4, False, True, ptq_twin="int4_weight_only",
        summary="fake-quantized int4 weights in training, converted at the end"),
}


@dataclass(frozen=True)
class QuantizationConfig:
    method: str = "none"  # a key of METHODS
    group_size: int = 32  # inputs per scale for the 4-bit methods; must divide every quantized layer's in_features
    include_embeddings: bool = False  # also quantize the token embedding and the output head (weight-only int8/int4)
    skip_indivisible: bool = False  # keep layers whose in_features group_size does not divide in full precision
    # 4-bit storage on CPU: "unpacked" (torchao IntxUnpackedToInt8Tensor: one int8 per weight, any shape, the
    # format QAT converts to) or "packed" (torchao's prototype Int4OpaqueTensor: two weights per byte, tinygemm CPU
    # kernel; weight-only int4 only)
    int4_format: Literal["unpacked", "packed"] = "unpacked"
    # int8 weight-only kernel: "torchao" (Int8Tensor) or "int8pack" (PyTorch's _weight_int8pack_mm CPU kernel with bf16
    # activations: faster decoding on CPU, bf16 rounding of the activations; framework/quantization/int8pack.py)
    int8_kernel: Literal["torchao", "int8pack"] = "torchao"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"quantization.method: {self.method!r} is not one of {', '.join(METHODS)}")
        if self.group_size < 1 or self.group_size & (self.group_size - 1):
            raise ConfigError(f"quantization.group_size: {self.group_size} must be a power of two >= 1")
        if self.int4_format == "packed" and self.method != "int4_weight_only":
            raise ConfigError("quantization.int4_format: 'packed' exists for method int4_weight_only only "
                              f"(method is {self.method!r}); QAT and dynamic-activation methods use 'unpacked'")

        if self.int8_kernel == "int8pack" and self.method != "int8_weight_only":
            raise ConfigError("quantization.int8_kernel: 'int8pack' exists for method int8_weight_only only "
                              f"(method is {self.method!r})")

    @property
    def spec(self) -> Method:
        return METHODS[self.method]

    def post_training(self) -> "QuantizationConfig":
        """The post-training config whose result this one has (a QAT method converts to its PTQ twin)."""
        return self if self.spec.kind != "qat" else QuantizationConfig(**{**self.to_dict(), "method": self.spec.ptq_twin})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantization_config(values: Mapping[str, Any] | None) -> QuantizationConfig:
    """The ``quantization`` section of a config (None or {} = no quantization), validated field by field."""
    return validate_config(QuantizationConfig, dict(values or {}), owner="quantization")
