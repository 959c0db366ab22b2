"""Conversion of original Wonton checkpoints into Hugging Face directories.

Names load on first use, so `wonton-hf convert-checkpoint --help` answers without importing torch.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "convert_checkpoint": "checkpoint",
    "convert_state_dict": "checkpoint",
    "load_original_state_dict": "checkpoint",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
