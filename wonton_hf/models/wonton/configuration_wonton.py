# Copyright 2026 The wonton_hf authors. Licensed under the Apache License, Version 2.0.
"""Wonton model configuration.

Self-contained on purpose: `save_pretrained` copies this file next to the weights so that a
process without `wonton_hf` installed can load the model with `trust_remote_code=True`.
It may import only `transformers` (and the standard library).
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers.activations import ACT2FN
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

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


@strict
class WontonConfig(PreTrainedConfig):
    r"""Configuration of a Wonton decoder (Nyonic technical report, arXiv 2404.15702).

    Pre-LayerNorm decoder with GELU MLP, biases in every linear layer, a final LayerNorm, an untied
    output head with bias, optional QK-LayerNorm and rotary (or learned absolute) positions.

    Args:
        position_embedding_type: `"rope"` (the 7B: rotary in every layer, full head dim, rotate-half)
            or `"learned"` (the public 1.5B: a learned absolute position table added to the input).
        qk_layernorm: LayerNorm over `head_dim` on queries and keys before RoPE. Bounds the attention
            logits, which the paper found necessary for a stable 7B run.
        z_loss_coef: PaLM's z-loss, `coef * mean(logsumexp(logits)^2)`; 0 disables it (the default).
        max_z_loss_coef: Baichuan 2's max-z loss, `coef * mean(max(logits)^2)`; the paper's default.
        loss_chunk_size: tokens per chunk of the training loss's output head. A training step with labels then
            computes the head, cross-entropy, z-loss and max-z loss chunk by chunk and never holds the
            `[tokens, vocab]` logits or their gradient (peak memory of the head: one `[chunk, vocab]` buffer);
            `logits` are not returned in that mode. 0 turns it off (full logits, the fused loss). The default,
            1024, is a few hundred MB per buffer at the paper's vocabulary, large enough to keep the matmuls
            efficient on CPU and GPU (benchmarks/head_memory.py).
        scaled_residual_init: scale the init std of the two projections that write into the residual
            stream (attention output, MLP down) by `1/sqrt(2 * num_hidden_layers)` (GPT-2's rule).

    Example:
        >>> config = WontonConfig.from_preset("wonton-7b")
        >>> config.hidden_size, config.num_hidden_layers
        (4096, 32)
    """

    model_type = "wonton"
    keys_to_ignore_at_inference = ["cache"]
    base_model_tp_plan = {
        "layers.*.self_attn.qkv_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = WONTON_VOCAB_SIZE
    hidden_size: int = 4096
    intermediate_size: int = 16384
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    max_position_embeddings: int = 2048
    position_embedding_type: str = "rope"
    rope_parameters: RopeParameters | dict | None = None
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

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> WontonConfig:
        """Build a named shape (see `WONTON_PRESETS`); keyword arguments override its fields."""
        if name not in WONTON_PRESETS:
            raise ValueError(f"Unknown Wonton preset {name!r}; choose one of {sorted(WONTON_PRESETS)}.")
        return cls(**{**WONTON_PRESETS[name], **overrides})

    def convert_rope_params_to_dict(self, **kwargs):
        # Accept the legacy flat `rope_theta` key, then fill in transformers' standard fields.
        if self.rope_parameters is None:
            self.rope_parameters = {}
        self.rope_parameters.setdefault("rope_type", "default")
        self.rope_parameters.setdefault("rope_theta", kwargs.pop("rope_theta", self.default_theta))
        self.standardize_rope_params()
        return kwargs

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Checked here rather than in `validate_architecture` so the error is a plain `ValueError`
        # (strict's class validators wrap it in a non-ValueError exception type).
        self.check_fields()

    def check_fields(self) -> None:
        """Reject impossible shapes before any weight is allocated; each error names the field and the fix."""
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads}); change one of them."
            )
        partial = (self.rope_parameters or {}).get("partial_rotary_factor", 1.0)
        if partial != 1.0:
            raise ValueError(
                f"`rope_parameters.partial_rotary_factor` is {partial}, but Wonton rotates the full head dim "
                "(the paper's RoPE); remove the key or set it to 1.0."
            )
        if self.position_embedding_type == "rope" and self.head_dim % 2 != 0:
            raise ValueError(f"RoPE needs an even head dim; `hidden_size / num_attention_heads` is {self.head_dim}.")
        if self.hidden_act not in ACT2FN:
            raise ValueError(
                f"`hidden_act` {self.hidden_act!r} is unknown; use one of transformers' ACT2FN names, e.g. 'gelu'."
            )
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"`position_embedding_type` must be one of {POSITION_EMBEDDING_TYPES}, got {self.position_embedding_type!r}."
            )
        for name in ("layer_norm_eps", "initializer_range"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}.")
        for name in ("z_loss_coef", "max_z_loss_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0 (0 disables the term), got {getattr(self, name)}.")
        if self.loss_chunk_size < 0:
            raise ValueError(
                f"`loss_chunk_size` must be >= 0 (0 turns the chunked loss off), got {self.loss_chunk_size}."
            )
        for name in ("embedding_dropout", "attention_dropout", "hidden_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}.")


__all__ = ["WontonConfig", "WONTON_PRESETS"]
