"""Conversion of original Wonton checkpoints into Hugging Face directories."""

from .checkpoint import convert_checkpoint, convert_state_dict, load_original_state_dict

__all__ = ["convert_checkpoint", "convert_state_dict", "load_original_state_dict"]
