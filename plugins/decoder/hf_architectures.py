"""The Hugging Face architectures the decoder stack converts to and from (``archlab export format=hf`` /
``archlab import``): each one's config and state-dict mappings, from the per-architecture modules beside this one.

Export tries them in this order and takes the first whose config mapping accepts the model; a model none accepts
(a sparse kind, an LSTM layer, a hybrid Hugging Face has no class for) is refused with every architecture's reason.
"""
from __future__ import annotations

from typing import Any

from framework.interop import HFArchitecture, NotConvertible

from . import hf_deepseek_v3, hf_gpt2, hf_jamba, hf_llama, hf_mamba, hf_recurrent_gemma


def _jamba_export(cfg: Any) -> Any:
    hf_jamba.hf_config(cfg)  # its own reasons first (layout, router)
    raise NotConvertible("no Jamba counterpart: a JambaForCausalLM RMS-normalises dt, B and C in its Mamba layers "
                         "(dt_layernorm, b_layernorm, c_layernorm), which the stack's mamba mixer does not")


HF_ARCHITECTURES = (
    HFArchitecture(
        "gpt2", "AutoModelForCausalLM", hf_gpt2.hf_config, hf_gpt2.config_from_hf,
        lambda ours, cfg, template: hf_gpt2.to_gpt2(ours, cfg.n_layers),
        lambda hf, hf_cfg, cfg: hf_gpt2.from_gpt2(hf, cfg.n_layers)),
    HFArchitecture(
        "llama", "AutoModelForCausalLM", hf_llama.llama_config, hf_llama.config_from_hf, hf_llama.to_llama,
        lambda hf, hf_cfg, cfg: hf_llama.from_llama(hf, cfg.n_layers)),
    HFArchitecture(
        "mixtral", "AutoModelForCausalLM", hf_llama.mixtral_config, hf_llama.config_from_hf, hf_llama.to_mixtral,
        lambda hf, hf_cfg, cfg: hf_llama.from_mixtral(hf, cfg.n_layers)),
    HFArchitecture(
        "mamba", "AutoModelForCausalLM", hf_mamba.hf_config, lambda c, n: hf_mamba.config_from_hf(c),
        lambda ours, cfg, template: hf_mamba.to_hf_mamba(ours, cfg.n_layers),
        lambda hf, hf_cfg, cfg: hf_mamba.from_hf_mamba(hf, cfg.n_layers)),
    HFArchitecture(
        "mamba2", "AutoModelForCausalLM", hf_mamba.hf_config, lambda c, n: hf_mamba.config_from_hf(c),
        lambda ours, cfg, template: hf_mamba.to_hf_mamba(ours, cfg.n_layers),
        lambda hf, hf_cfg, cfg: hf_mamba.from_hf_mamba(hf, cfg.n_layers)),
    HFArchitecture(
        "recurrent_gemma", "AutoModelForCausalLM",
        lambda cfg: hf_recurrent_gemma.hf_config(cfg, attention_bias=True),  # our q/k/v biases, exactly
        lambda c, n: hf_recurrent_gemma.config_from_hf(c, n or 8192),
        lambda ours, cfg, template: hf_recurrent_gemma.to_hf_recurrent_gemma(ours, cfg.n_layers, True),
        lambda hf, hf_cfg, cfg: hf_recurrent_gemma.from_hf_recurrent_gemma(hf, cfg.n_layers)),
    HFArchitecture(
        "deepseek_v3", "AutoModelForCausalLM", hf_deepseek_v3.hf_config, hf_deepseek_v3.config_from_hf,
        lambda ours, cfg, template: hf_deepseek_v3.to_hf_deepseek_v3(ours, cfg),
        lambda hf, hf_cfg, cfg: hf_deepseek_v3.from_hf_deepseek_v3(hf, hf_cfg)),
    HFArchitecture(
        "jamba", "AutoModelForCausalLM", _jamba_export, lambda c, n: hf_jamba.config_from_hf(c, n or 4096),
        lambda ours, cfg, template: hf_jamba.to_hf_jamba(ours, cfg),
        lambda hf, hf_cfg, cfg: hf_jamba.from_hf_jamba(hf, cfg.n_layers)),
)
