# Copyright 2026 The wonton_hf authors. Licensed under the Apache License, Version 2.0.
"""Wonton's architecture: the fields a model shape is made of, the named presets and the rules a shape must obey.

Standard library only, for two readers. `configuration_wonton.py` builds `WontonConfig` on it (its fields are
these, its check is `architecture_problems`); `save_pretrained` copies this file next to the weights with the
configuration (transformers exports a module's relative imports), so `trust_remote_code` still needs no
`wonton_hf`. And the run-config check imports it alone: a shape a run would die on (`hidden_size` not divisible
by the heads, an odd RoPE head dim) is reported in milliseconds, before torch or a tokenizer is touched.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

# The paper's tokenizer has 139,776 = 1092 x 128 pieces: a multiple of 128 keeps the embedding
# and output-head matmuls on tensor-core friendly shapes.
WONTON_VOCAB_SIZE = 139_776

# Named shapes. Sizes follow GPT-3's naming, as the paper does ("6.7B" for the 4096 x 32 shape);
# exact counts (with Wonton's biases and untied head) are in the comments.
WONTON_PRESETS: dict[str, dict[str, Any]] = {
    # CPU demo and tests: 2.9M parameters (2,899,200) with an 8,192-piece tokenizer.
    "wonton-tiny": dict(
        vocab_size=8192,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=512,
    ),
    # GPT-3 Small shape: 135M with a 32,768-piece tokenizer of your own (85M without embeddings).
    "wonton-125m": dict(
        vocab_size=32_768,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=2048,
    ),
    # 1.11B with the paper's tokenizer (0.68B without embeddings); head_dim 128 like the 7B.
    "wonton-1b": dict(
        vocab_size=WONTON_VOCAB_SIZE,
        hidden_size=1536,
        intermediate_size=6144,
        num_hidden_layers=24,
        num_attention_heads=12,
        max_position_embeddings=2048,
    ),
    # The public 1.5B checkpoint of the family: learned absolute positions, no QK-LayerNorm, ctx 1024.
    "wonton-1.5b-public": dict(
        vocab_size=50_304,
        hidden_size=1600,
        intermediate_size=6400,
        num_hidden_layers=48,
        num_attention_heads=25,
        max_position_embeddings=1024,
        position_embedding_type="learned",
        qk_layernorm=False,
    ),
    # Table 1 of the paper: 7,589,364,224 parameters ("6.7B" by GPT-3's name for this shape).
    "wonton-7b": dict(
        vocab_size=WONTON_VOCAB_SIZE,
        hidden_size=4096,
        intermediate_size=16384,
        num_hidden_layers=32,
        num_attention_heads=32,
        max_position_embeddings=2048,
    ),
}

POSITION_EMBEDDING_TYPES = ("rope", "learned")

SIZE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
)


@dataclass(repr=False, eq=False)
class WontonArchitecture:
    """The fields of a Wonton shape with the 7B's values (the paper's Table 1); `WontonConfig` adds transformers'."""

    vocab_size: int = WONTON_VOCAB_SIZE
    hidden_size: int = 4096
    intermediate_size: int = 16384
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    max_position_embeddings: int = 2048
    position_embedding_type: str = "rope"
    rope_parameters: dict | None = None
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    qk_layernorm: bool = True
    use_bias: bool = True
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    scaled_residual_init: bool = True
    z_loss_coef: float = 0.0
    max_z_loss_coef: float = 2e-4
    loss_chunk_size: int = 1024
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    use_cache: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 2
    eos_token_id: int | list[int] | None = 3


def architecture_problems(shape: Any, activations: Collection[str] | None = None) -> list[tuple[str, str]]:
    """(field, message) for each rule `shape` breaks; each message names the field and the fix.

    `shape` is a `WontonConfig` or a `WontonArchitecture` (what a run config would build). `activations` are the
    accepted `hidden_act` names (transformers' `ACT2FN`, which imports torch); None skips that one rule.
    """
    found = [
        (n, f"`{n}` must be a positive integer, got {getattr(shape, n)}.")
        for n in SIZE_FIELDS
        if getattr(shape, n) <= 0
    ]
    if found:
        return found
    if shape.hidden_size % shape.num_attention_heads != 0:
        return [
            (
                "hidden_size",
                f"`hidden_size` ({shape.hidden_size}) must be divisible by `num_attention_heads` "
                f"({shape.num_attention_heads}); change one of them.",
            )
        ]
    return _position_problems(shape) + _value_problems(shape, activations)


def _position_problems(shape: Any) -> list[tuple[str, str]]:
    found = []
    partial = (shape.rope_parameters or {}).get("partial_rotary_factor", 1.0)
    if partial != 1.0:
        found.append(
            (
                "rope_parameters",
                f"`rope_parameters.partial_rotary_factor` is {partial}, but Wonton rotates the full head dim "
                "(the paper's RoPE); remove the key or set it to 1.0.",
            )
        )
    head_dim = shape.hidden_size // shape.num_attention_heads
    if shape.position_embedding_type == "rope" and head_dim % 2 != 0:
        found.append(
            ("hidden_size", f"RoPE needs an even head dim; `hidden_size / num_attention_heads` is {head_dim}.")
        )
    if shape.position_embedding_type not in POSITION_EMBEDDING_TYPES:
        found.append(
            (
                "position_embedding_type",
                f"`position_embedding_type` must be one of {POSITION_EMBEDDING_TYPES}, "
                f"got {shape.position_embedding_type!r}.",
            )
        )
    return found


def _value_problems(shape: Any, activations: Collection[str] | None) -> list[tuple[str, str]]:
    found = []
    if activations is not None and shape.hidden_act not in activations:
        found.append(
            (
                "hidden_act",
                f"`hidden_act` {shape.hidden_act!r} is unknown; use one of transformers' ACT2FN names, e.g. 'gelu'.",
            )
        )
    for name in ("layer_norm_eps", "initializer_range"):
        if getattr(shape, name) <= 0:
            found.append((name, f"`{name}` must be positive, got {getattr(shape, name)}."))
    for name in ("z_loss_coef", "max_z_loss_coef"):
        if getattr(shape, name) < 0:
            found.append((name, f"`{name}` must be >= 0 (0 disables the term), got {getattr(shape, name)}."))
    if shape.loss_chunk_size < 0:
        found.append(
            (
                "loss_chunk_size",
                f"`loss_chunk_size` must be >= 0 (0 turns the chunked loss off), got {shape.loss_chunk_size}.",
            )
        )
    for name in ("embedding_dropout", "attention_dropout", "hidden_dropout"):
        if not 0.0 <= getattr(shape, name) < 1.0:
            found.append((name, f"`{name}` must be in [0, 1), got {getattr(shape, name)}."))
    return found


__all__ = [
    "POSITION_EMBEDDING_TYPES",
    "WONTON_PRESETS",
    "WONTON_VOCAB_SIZE",
    "WontonArchitecture",
    "architecture_problems",
]
