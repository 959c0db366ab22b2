"""The Wonton model: `configuration_wonton.py` and `modeling_wonton.py` are self-contained (exported with checkpoints)."""

from .configuration_wonton import WONTON_PRESETS, WontonConfig
from .modeling_wonton import (
    WontonCausalLMOutputWithPast,
    WontonForCausalLM,
    WontonModel,
    WontonPreTrainedModel,
)

__all__ = [
    "WONTON_PRESETS",
    "WontonConfig",
    "WontonCausalLMOutputWithPast",
    "WontonForCausalLM",
    "WontonModel",
    "WontonPreTrainedModel",
]
