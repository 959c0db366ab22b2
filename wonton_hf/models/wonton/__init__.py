"""The Wonton model: `architecture_wonton.py`, `configuration_wonton.py` and `modeling_wonton.py` are
self-contained (exported with checkpoints).

Names load on first use, so `wonton_hf.models.wonton.architecture_wonton` (the presets and shape rules the
run-config check reads) imports without torch or transformers.
"""

from ..._lazy import lazy_exports

_EXPORTS = {
    "WONTON_PRESETS": "architecture_wonton",
    "WontonArchitecture": "architecture_wonton",
    "WontonConfig": "configuration_wonton",
    "WontonCausalLMOutputWithPast": "modeling_wonton",
    "WontonForCausalLM": "modeling_wonton",
    "WontonModel": "modeling_wonton",
    "WontonPreTrainedModel": "modeling_wonton",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
