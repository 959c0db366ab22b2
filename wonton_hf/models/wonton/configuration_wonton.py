# Copyright 2026 The wonton_hf authors. Licensed under the Apache License, Version 2.0.
"""Wonton model configuration.

Self-contained on purpose: `save_pretrained` copies this file (and `architecture_wonton.py`, its one relative
import: the fields, presets and shape rules, standard library only) next to the weights so that a process
without `wonton_hf` installed can load the model with `trust_remote_code=True`. It may import only
`transformers`, the standard library and `architecture_wonton.py`.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers.activations import ACT2FN
from transformers.configuration_utils import PreTrainedConfig

from .architecture_wonton import WONTON_PRESETS, WontonArchitecture, architecture_problems


@strict
class WontonConfig(WontonArchitecture, PreTrainedConfig):
    r"""Configuration of a Wonton decoder (Nyonic technical report, arXiv 2404.15702).

    The fields are `WontonArchitecture`'s (architecture_wonton.py), declared there so that a run config can be
    checked against them without importing transformers.

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
        "layers.*.self_attn.qkv_proj": "wonton_packed_qkv_colwise",  # [q; k; v] strided: each rank its heads of each
        # QK-LayerNorm is over head_dim, so local to a head; each rank's gradient covers only its heads: summed
        "layers.*.self_attn.q_norm": "replicated_with_grad_allreduce",
        "layers.*.self_attn.k_norm": "replicated_with_grad_allreduce",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

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
        if not self.qk_layernorm:  # no q_norm/k_norm modules: a plan entry that matches nothing is refused
            plan = type(self).base_model_tp_plan
            self.base_model_tp_plan = {k: v for k, v in plan.items() if not k.endswith(("q_norm", "k_norm"))}

    def check_fields(self) -> None:
        """Reject impossible shapes before any weight is allocated (the rules: `architecture_problems`)."""
        problems = architecture_problems(self, ACT2FN)
        if problems:
            raise ValueError(" ".join(message for _, message in problems))


__all__ = ["WontonConfig", "WONTON_PRESETS"]
