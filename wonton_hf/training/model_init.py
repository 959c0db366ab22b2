"""A new Wonton model sized to a tokenizer: pretraining from scratch and SFT's on-the-spot tiny base build the
same way, so the tokenizer's special ids and the position range cannot drift apart between the two."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from ..models.wonton import WontonConfig, WontonForCausalLM


def fresh_wonton_model(
    preset: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    attn_implementation: str,
    overrides: dict[str, Any] | None = None,
) -> WontonForCausalLM:
    """`preset` with the tokenizer's vocabulary and special ids, at least `max_length` positions, and `overrides`
    (the run config's) on top; randomly initialised (seed first for the same weights on every rank)."""
    fields = {
        "vocab_size": len(tokenizer),
        "max_position_embeddings": max(max_length, WontonConfig.from_preset(preset).max_position_embeddings),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        **(overrides or {}),
    }
    config = WontonConfig.from_preset(preset, attn_implementation=attn_implementation, **fields)
    return WontonForCausalLM(config)


__all__ = ["fresh_wonton_model"]
