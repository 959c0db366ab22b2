"""wonton_hf: the Wonton 7B training system (arXiv 2404.15702) on the Hugging Face stack.

Importing the package registers `WontonConfig` with `AutoConfig` and the models with `AutoModel` /
`AutoModelForCausalLM`, and marks them for `save_pretrained` to export their code (`auto_map`), so a
saved directory also loads with `trust_remote_code=True` where `wonton_hf` is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .models.wonton import (
    WONTON_PRESETS,
    WontonCausalLMOutputWithPast,
    WontonConfig,
    WontonForCausalLM,
    WontonModel,
    WontonPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register(WontonConfig.model_type, WontonConfig, exist_ok=True)
AutoModel.register(WontonConfig, WontonModel, exist_ok=True)
AutoModelForCausalLM.register(WontonConfig, WontonForCausalLM, exist_ok=True)
WontonConfig.register_for_auto_class()
WontonModel.register_for_auto_class("AutoModel")
WontonForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "WONTON_PRESETS",
    "WontonCausalLMOutputWithPast",
    "WontonConfig",
    "WontonForCausalLM",
    "WontonModel",
    "WontonPreTrainedModel",
    "__version__",
]
