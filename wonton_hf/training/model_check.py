"""The model section of a run config against the model's own rules, before torch or a tokenizer is touched.

The presets, the fields and the shape rules are `WontonConfig`'s, read from `architecture_wonton` (standard
library only), so a shape the model would reject (`hidden_size` not divisible by the heads, an odd RoPE head
dim) is one more problem in the config's `ConfigError`, named by its path, instead of a traceback from
`WontonConfig` after the tokenizer was trained. What only the run knows is checked here too: the position
table against the sequence length, a fixed vocabulary against the tokenizer the run trains or loads.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator

from .._problems import Problem
from ..models.wonton.architecture_wonton import WONTON_PRESETS, WontonArchitecture, architecture_problems
from .schema import close_match

GENERIC_FIELDS = ("dtype", "output_hidden_states", "output_attentions")
"""`PreTrainedConfig` fields a run may sensibly set next to Wonton's own."""


def model_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(WontonArchitecture)] + list(GENERIC_FIELDS)


def check_preset(preset: str) -> str:
    presets = list(WONTON_PRESETS)
    if preset not in presets:
        raise ValueError(f"unknown preset{close_match(preset, presets)}; accepted: {', '.join(presets)}")
    return preset


def check_model_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    accepted = model_fields()
    unknown = [key for key in overrides if key not in accepted]
    if unknown:
        hints = "".join(close_match(key, accepted) for key in unknown)
        raise ValueError(f"unknown WontonConfig field(s) {unknown}{hints}; accepted: {', '.join(accepted)}")
    return overrides


PresetName = Annotated[str, AfterValidator(check_preset)]
"""a `WONTON_PRESETS` name"""
ModelOverrides = Annotated[dict[str, Any], AfterValidator(check_model_overrides)]
"""`WontonConfig` field -> value"""


def shape_problems(
    preset: str, overrides: dict[str, Any], where: str, seq_len: int, tokenizer_size: int | None
) -> list[Problem]:
    """The shape a run builds (preset, positions for `seq_len`, `overrides` last, as the launchers do) against
    `architecture_problems`, each problem under `where.<field>` when an override set that field."""
    positions = max(seq_len, WONTON_PRESETS[preset]["max_position_embeddings"])
    values = {**WONTON_PRESETS[preset], "max_position_embeddings": positions, **overrides}
    names = {f.name for f in dataclasses.fields(WontonArchitecture)}
    shape = WontonArchitecture(**{k: v for k, v in values.items() if k in names})
    try:
        found = architecture_problems(shape)
    except TypeError as error:  # a value of the wrong type (e.g. a string for a size)
        return [(where, f"a field has the wrong type for the model ({error}).")]
    if shape.position_embedding_type == "learned" and shape.max_position_embeddings < seq_len:
        found.append(
            (
                "max_position_embeddings",
                f"got {shape.max_position_embeddings}: learned positions need a table as long as the sequence "
                f"({seq_len}); raise it or leave it out (it then follows the sequence length).",
            )
        )
    if "vocab_size" in overrides and tokenizer_size is not None and overrides["vocab_size"] < tokenizer_size:
        found.append(
            (
                "vocab_size",
                f"got {overrides['vocab_size']}: smaller than the tokenizer of the run ({tokenizer_size:,} "
                "pieces), whose ids would index past the embedding; leave it out (it follows the tokenizer).",
            )
        )
    return [(f"{where}.{name}" if name in overrides else where, message) for name, message in found]


def trained_tokenizer_size(requested: int) -> int:
    """The size of the tokenizer a run trains for `requested` pieces (the trainer's rounding)."""
    from ..tokenization.trainer import round_vocab_size

    return round_vocab_size(requested)


def saved_tokenizer_size(path: str | Path) -> int | None:
    """The ids a saved fast tokenizer can produce (highest id + 1 over its vocabulary and added tokens), read from
    its `tokenizer.json` as plain JSON: loading it with transformers would import torch. None when unreadable
    (the run's own load then says why)."""
    try:
        data = json.loads((Path(path) / "tokenizer.json").read_text(encoding="utf-8"))
        ids = list(data["model"]["vocab"].values()) + [token["id"] for token in data.get("added_tokens", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return max(ids) + 1 if ids else None


def model_problems(config: Any) -> list[Problem]:
    """A pretraining run config's model shape (none to check when it continues from `init_from`)."""
    if config.model.init_from is not None:
        return []
    if config.tokenizer.path is None:
        size = trained_tokenizer_size(config.tokenizer.vocab_size)
    else:
        size = saved_tokenizer_size(config.tokenizer.path)
    return shape_problems(config.model.preset, config.model.overrides, "model.overrides", config.data.seq_len, size)
