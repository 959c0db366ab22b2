# Copyright 2026 The wonton_hf authors. Licensed under the Apache License, Version 2.0.
"""The Wonton decoder (Nyonic technical report, arXiv 2404.15702) on transformers' shared machinery.

Self-contained on purpose: `save_pretrained` copies this file and `configuration_wonton.py` next to
the weights, so a process without `wonton_hf` loads the model with `trust_remote_code=True`.
Imports: torch and transformers only.

Block (pre-LayerNorm, sequential residual):
    x = x + o_proj(attention(qk_norm(q), qk_norm(k), v))      # on input_layernorm(x)
    x = x + down_proj(gelu(up_proj(post_attention_layernorm(x))))
then a final LayerNorm and an untied output head with bias. Differences from GPT-NeoX: QK-LayerNorm,
a [q; k; v] fused projection (the original checkpoint's layout) instead of per-head interleaving,
sequential residual, full-head-dim RoPE or learned positions, z / max-z loss on the logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, logging
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.import_utils import is_torch_distributed_available, is_tracing
from transformers.utils.output_capturing import capture_outputs

from .configuration_wonton import WontonConfig

logger = logging.get_logger(__name__)


if is_torch_distributed_available():
    from torch.distributed.tensor import distribute_tensor
    from torch.distributed.tensor.placement_types import _StridedShard
    from transformers.distributed.parallel_utils import ALL_PARALLEL_STYLES
    from transformers.distributed.tensor_parallel import PackedColwiseParallel

    class WontonPackedQKVColwise(PackedColwiseParallel):
        """Colwise TP for `qkv_proj`, whose output stacks `[q; k; v]` (the checkpoint's layout, kept as saved).

        A plain colwise shard hands rank 0 a contiguous slice of the stack (all of q and part of k at TP 2).
        `_StridedShard(0, split_factor=3)` gives each rank its heads of each of q, k and v: `[q_r; k_r; v_r]`,
        which `WontonAttention.forward` views as `(3, heads per rank, head_dim)`. Unlike the built-in
        `packed_colwise` (gate/up, 1-D bias as plain `Shard`), the bias is strided the same way as the weight.
        """

        def __init__(self):
            super().__init__(split_factor=3)

        def shard_param(self, module, param, mesh):
            meta = module._parameters.get(param)
            if meta is None:
                return
            placement = _StridedShard(dim=0, split_factor=self.split_factor)
            module._parameters[param] = nn.Parameter(
                distribute_tensor(meta, mesh, [placement], src_data_rank=None), requires_grad=meta.requires_grad
            )

    # Registered on import, so the plan resolves for `trust_remote_code` loads too (this file, copied by
    # `save_pretrained`, is what registers it there).
    ALL_PARALLEL_STYLES.register("wonton_packed_qkv_colwise", WontonPackedQKVColwise())


@dataclass
class WontonCausalLMOutputWithPast(CausalLMOutputWithPast):
    r"""
    loss: the training objective, `ce_loss + z_loss_coef * z_loss + max_z_loss_coef * max_z_loss`.
    ce_loss: next-token cross-entropy alone (what perplexity is computed from).
    z_loss: mean of `logsumexp(logits)^2` over label tokens (unweighted; logged even when its coef is 0).
    max_z_loss: mean of `max(logits)^2` over label tokens (unweighted; logged even when its coef is 0).
    token_loss: only with `return_token_loss=True`: the per-token cross-entropy the fused loss computed anyway,
        fp32, detached, shaped like the labels; position t scores label t+1, 0 where nothing is scored.
        Per-source loss accounting reads it instead of running a second cross-entropy over the logits.
    logits: `None` when the chunked head computed the loss (a training step with `config.loss_chunk_size > 0`,
        see `WontonForCausalLM.forward`'s `return_logits`): that mode never builds the `[tokens, vocab]` logits.
    logits_mean: only in that mode: the mean logit over the vocabulary per position (fp32, detached, `[B, T]`),
        computed as `h . mean(W) + mean(b)`, for stability monitors that would otherwise hook the output head.
    """

    ce_loss: torch.FloatTensor | None = None
    z_loss: torch.FloatTensor | None = None
    max_z_loss: torch.FloatTensor | None = None
    token_loss: torch.FloatTensor | None = None
    logits_mean: torch.FloatTensor | None = None


# Copied from transformers.models.gpt_neox.modeling_gpt_neox.GPTNeoXRotaryEmbedding (full head dim here)
class WontonRotaryEmbedding(nn.Module):
    inv_freq: torch.Tensor  # non-persistent; re-filled by `_init_weights` after meta-device loading

    def __init__(self, config: WontonConfig):
        super().__init__()
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        rope_init_fn: Callable = self.compute_default_rope_parameters
        if self.rope_type != "default":
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = rope_init_fn(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: WontonConfig, device=None, **kwargs) -> tuple[torch.Tensor, float]:
        base = config.rope_parameters["rope_theta"]
        dim = config.hidden_size // config.num_attention_heads
        inv_freq = 1.0 / (
            base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim)
        )
        return inv_freq, 1.0

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Computed in fp32: bf16 angles lose whole radians at positions in the thousands.
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)  # rotate-half layout, as the original model
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim: int = 1):
    """Rotate q and k ([B, H, T, D]) by position; cos/sin are [B, T, D]."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # B, H, Tq, Tk
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # B, Tq, H, D
    return attn_output, attn_weights


class WontonAttentionProbe(nn.Module):
    """Identity on (query, key) after QK-LayerNorm and RoPE: the tap for stability monitors.

    Fused kernels (sdpa, flex, flash) never materialise the attention logits. A forward hook on this
    module sees exactly the q and k the kernel receives, so a monitor can compute query norms and
    `max(q . k) * scaling` on a sample of positions without switching the model to eager attention.
    With no hook registered it is not called at all.
    """

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return query, key


class WontonAttention(nn.Module):
    def __init__(self, config: WontonConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        # One matmul for q, k, v stacked in that order: the original checkpoint's `in_proj_weight`.
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.use_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.use_bias)
        self.o_proj.writes_to_residual = True  # scaled init, see `WontonPreTrainedModel._init_weights`
        if config.qk_layernorm:
            # Over head_dim, shared by all heads: bounds |q . k| however large the activations grow.
            self.q_norm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps, bias=config.use_bias)
            self.k_norm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps, bias=config.use_bias)
        else:
            self.q_norm = self.k_norm = None
        self.probe = WontonAttentionProbe()

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]  # B, T
        qkv = self.qkv_proj(hidden_states).view(*input_shape, 3, -1, self.head_dim)  # B, T, 3, H, D
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B, H, T, D
        if self.q_norm is not None:
            query, key = self.q_norm(query), self.k_norm(key)  # over D: the layout does not matter

        if position_embeddings is not None:
            cos, sin = position_embeddings
            query, key = apply_rotary_pos_emb(query, key, cos, sin)
        if self.probe._forward_hooks:  # only a monitor's measured steps pay for the module call
            query, key = self.probe(query, key)

        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


class WontonMLP(nn.Module):
    def __init__(self, config: WontonConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.use_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.use_bias)
        self.down_proj.writes_to_residual = True  # scaled init, see `WontonPreTrainedModel._init_weights`
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.up_proj(x)))


class WontonDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: WontonConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.use_bias)
        self.self_attn = WontonAttention(config, layer_idx)
        self.post_attention_layernorm = nn.LayerNorm(
            config.hidden_size, eps=config.layer_norm_eps, bias=config.use_bias
        )
        self.mlp = WontonMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        # The cache is named `cache` (transformers >= 5.24): `GradientCheckpointingLayer` drops it by that name.
        attn_output, _ = self.self_attn(
            self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            position_ids=position_ids,  # flash attention reads packed boundaries from these
            cache=cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = hidden_states + self.dropout(attn_output)
        hidden_states = hidden_states + self.dropout(self.mlp(self.post_attention_layernorm(hidden_states)))
        return hidden_states


class WontonPreTrainedModel(PreTrainedModel):
    config: WontonConfig
    config_class = WontonConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["WontonDecoderLayer"]
    _skip_keys_device_placement = ["cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": WontonDecoderLayer, "attentions": WontonAttention}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Defaults: normal(0, initializer_range) for linears and embeddings, zero biases, LayerNorm 1/0,
        # RoPE inv_freq re-computed (models are built on the meta device in transformers 5).
        super()._init_weights(module)
        if self.config.scaled_residual_init and getattr(module, "writes_to_residual", False):
            # GPT-2's rule, cited by the paper: the two projections that write into the residual stream
            # get std / sqrt(2 * layers), so the residual's variance does not grow with depth. Decided on
            # the Linear itself: transformers skips parameter-less parents (attention, MLP) for remote code.
            std = self.config.initializer_range / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.weight, mean=0.0, std=std)


def _positions_from_cu_seq_lens(cu_seq_lens: torch.Tensor, total: int) -> torch.LongTensor:
    """[0, n1, n1+n2, ...] -> position ids restarting at 0 per sequence, shape [1, total]."""
    starts = torch.zeros(total, dtype=torch.long, device=cu_seq_lens.device)
    starts[cu_seq_lens[1:-1].long()] = 1
    segment = starts.cumsum(0)
    return (torch.arange(total, device=cu_seq_lens.device) - cu_seq_lens.long()[segment]).unsqueeze(0)


def _document_mask(
    attention_mask: torch.Tensor | None,
    cache: Cache | None,
    past_seen: int | torch.Tensor,
    position_ids: torch.LongTensor,
    inputs_embeds: torch.Tensor,
) -> Callable | None:
    """Keep packed documents apart in the cases transformers' own detection skips.

    `create_causal_mask` finds position-id restarts only when there is neither a 2-D mask nor a cache: a
    packed row arriving with an all-ones mask, or with a cache (prefill, then every decoding step), would
    otherwise attend across documents. The rule needs no document ids, only what every forward has: a real
    query at position `p` belongs to the document made of the `p` real tokens before it, so it may see a key
    iff at most `p` real tokens lie between them. Where positions count real tokens from 0 (`generate()`'s
    `cumsum(mask) - 1`, a packed row's restarts) this is exactly the query's own document, also across the
    gaps of a padding mask and across decoding steps after a packed prefill; where positions run ahead of the
    real-token count (a prompt that does not start at 0) nothing is excluded. Padded queries are left to the
    padding mask (constraining them could leave a row with no key at all).

    No Python `if` reads a tensor while tracing (a static cache's length is a tensor), so
    `torch.compile(fullgraph=True)` holds; the shortcut returning `None` when nothing is excluded (every
    unpacked batch) runs only eagerly, and spares the default path a materialised mask.
    """
    if attention_mask is None and cache is None:
        return None  # transformers handles this case itself
    if attention_mask is not None and attention_mask.ndim != 2:
        return None  # a prepared 4-D mask is used as given
    batch, q_len = inputs_embeds.shape[:2]
    device = inputs_embeds.device
    positions = position_ids.to(device).expand(batch, -1)
    if q_len == 1 and not is_tracing(positions):
        # Decoding, eagerly: the rule below excludes nothing unless a real token's position is smaller than the
        # real tokens before it (a packed prefill). Two reductions instead of the full rule's dozen small ops.
        before = attention_mask.sum(-1) - attention_mask[:, -1] if attention_mask is not None else past_seen
        if bool((positions[:, 0] >= before).all()):
            return None
    # A static cache's length is a tensor updated in place by the first layer: freeze today's value.
    offset = past_seen.clone() if isinstance(past_seen, torch.Tensor) else past_seen

    if attention_mask is None:  # every slot is real: the query at index i and position p sees keys from i - p on
        first_key = torch.arange(q_len, device=device) + offset - positions
        if not is_tracing(first_key) and bool((first_key <= 0).all()):
            return None

        def same_document(batch_idx, head_idx, q_idx, kv_idx):
            return kv_idx >= first_key[batch_idx, q_idx - offset]

        return same_document

    real = attention_mask.to(device=device, dtype=torch.bool)  # [batch, past + q_len]
    real_before = F.pad(real.long().cumsum(-1)[:, :-1], (1, 0))  # real tokens before each slot
    real_query = real[:, -q_len:]
    # A key is in the query's document iff real_before[key] >= real_before[query] - position.
    floor = real_before[:, -q_len:] - positions
    if not is_tracing(floor) and bool((~real_query | (floor <= 0)).all()):
        return None
    floor = floor.masked_fill(~real_query, torch.iinfo(floor.dtype).min)
    kv_len = cache.get_mask_sizes(q_len, 0)[0] if cache is not None else real.shape[-1]
    if isinstance(kv_len, int) and kv_len > real.shape[-1]:  # a static cache's unused slots: causal masks them
        real_before = F.pad(real_before, (0, kv_len - real.shape[-1]), value=torch.iinfo(real_before.dtype).max)

    def same_document_padded(batch_idx, head_idx, q_idx, kv_idx):
        return real_before[batch_idx, kv_idx] >= floor[batch_idx, q_idx - offset]

    return same_document_padded


class WontonModel(WontonPreTrainedModel):
    def __init__(self, config: WontonConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.position_embedding_type == "learned":
            self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
            self.rotary_emb = None
        else:
            self.embed_positions = None
            self.rotary_emb = WontonRotaryEmbedding(config)
        self.embed_dropout = nn.Dropout(config.embedding_dropout)
        self.layers = nn.ModuleList([WontonDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.use_bias)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    # `generate()` in transformers >= 5.24 passes the cache as `cache=`; the old name still works, with
    # transformers' own deprecation notice, for callers that pass it themselves.
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of `input_ids` or `inputs_embeds`.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        # An int, or a 0-d tensor for a static cache (compile-friendly: only used in arithmetic, never in an `if`).
        past_seen = cache.get_seq_length() if cache is not None else 0
        if position_ids is None and kwargs.get("cu_seq_lens_q") is not None:
            # `DataCollatorWithFlattening(return_position_ids=False)`: rebuild the restarts from the lengths.
            position_ids = _positions_from_cu_seq_lens(kwargs["cu_seq_lens_q"], inputs_embeds.shape[1])
        if position_ids is None:
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen
            position_ids = position_ids.unsqueeze(0)

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
            and_mask_function=_document_mask(attention_mask, cache, past_seen, position_ids, inputs_embeds),
        )

        hidden_states = inputs_embeds
        position_embeddings = None
        if self.embed_positions is not None:
            self._check_learned_positions(position_ids)
            hidden_states = hidden_states + self.embed_positions(position_ids)
        else:
            position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        hidden_states = self.embed_dropout(hidden_states)

        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                attention_mask=causal_mask,
                position_ids=position_ids,
                cache=cache,
                position_embeddings=position_embeddings,
                **kwargs,
            )
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache)

    def _check_learned_positions(self, position_ids: torch.Tensor) -> None:
        if is_tracing(position_ids):
            return
        if int(position_ids.max()) >= self.config.max_position_embeddings:
            raise ValueError(
                f"Position {int(position_ids.max())} is beyond `max_position_embeddings` "
                f"({self.config.max_position_embeddings}) of this learned-position model; shorten the input."
            )


class _FusedLanguageModelLoss(torch.autograd.Function):
    """Cross-entropy, z-loss and max-z loss from one pass over the logits, with one gradient buffer.

    Why not `self.loss_function` plus two extra terms: the stock cross-entropy materialises
    `log_softmax` ([tokens, vocab]) in the forward, a zero-filled scatter buffer and a softmax
    buffer in the backward, and the z / max-z terms would each add another full pass and buffer.
    Here the forward keeps only per-token statistics (max, argmax, logsumexp) and the backward writes
    the gradient once: `softmax * (g_ce + 2 g_z lse) - g_ce onehot(target) + 2 g_maxz max onehot(argmax)`.
    On the CPU demo shape this makes a Wonton training step faster than GPT-NeoX's although it
    computes two more loss terms and an output bias (benchmarks/model_throughput.py).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, denominator: torch.Tensor):
        # fp32 at least (no copy when already fp32); float64 stays float64, for exact gradient checks.
        logits32 = logits.to(torch.promote_types(logits.dtype, torch.float32))  # [N, V]
        top, top_index = logits32.max(dim=-1)
        # exp(logits - max) is both the logsumexp's work and, rescaled, the softmax the backward needs:
        # keeping it costs the same memory as the log_softmax output a stock cross-entropy keeps.
        shifted_exp = (logits32 - top[:, None]).exp_()
        sum_exp = shifted_exp.sum(dim=-1)
        lse = sum_exp.log() + top
        keep = targets != -100
        safe_targets = targets.masked_fill(~keep, 0)
        weight = keep.to(logits32.dtype) / denominator
        target_logit = logits32.gather(1, safe_targets[:, None]).squeeze(1)
        token_ce = (lse - target_logit).masked_fill_(~keep, 0.0)
        ce = (token_ce * weight).sum()
        z = (lse.square() * weight).sum()
        max_z = (top.square() * weight).sum()
        ctx.shifted_exp = shifted_exp  # becomes the gradient in place: one backward only
        ctx.logits_dtype = logits.dtype
        ctx.save_for_backward(lse, sum_exp, top, top_index, safe_targets, weight)
        ctx.mark_non_differentiable(token_ce)
        return ce, z, max_z, token_ce

    @staticmethod
    def backward(ctx, grad_ce: torch.Tensor, grad_z: torch.Tensor, grad_max_z: torch.Tensor, _grad_token_ce=None):
        lse, sum_exp, top, top_index, safe_targets, weight = ctx.saved_tensors
        grad, ctx.shifted_exp = ctx.shifted_exp, None
        if grad is None:
            raise RuntimeError("The Wonton loss reuses its buffer for the gradient: backward can run only once.")
        rows = torch.arange(grad.shape[0], device=grad.device)
        grad.mul_(((grad_ce + 2.0 * grad_z * lse) * weight / sum_exp)[:, None])  # softmax * d loss / d lse
        grad.index_put_((rows, safe_targets), -grad_ce * weight, accumulate=True)
        grad.index_put_((rows, top_index), 2.0 * grad_max_z * top * weight, accumulate=True)
        return grad.to(ctx.logits_dtype), None, None


def language_model_loss(
    logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    shift_labels: torch.Tensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    return_token_loss: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Next-token cross-entropy, PaLM z-loss `mean(logsumexp^2)` and Baichuan 2 max-z `mean(max^2)`.

    All three are averaged over the same tokens (labels != -100 after the shift) and by the same
    denominator (`num_items_in_batch` under gradient accumulation, as transformers' loss does), so they
    scale together whatever the padding or accumulation. Returns unweighted terms, and with
    `return_token_loss` a fourth: the per-token cross-entropy (detached, shaped like the shifted labels).
    """
    if shift_labels is None:
        # Pad-and-shift the labels rather than slice the logits: a [:, :-1] slice would copy them.
        shift_labels = F.pad(labels, (0, 1), value=-100)[..., 1:]
    targets = shift_labels.reshape(-1).to(logits.device)
    if num_items_in_batch is None:
        denominator = (targets != -100).sum().clamp(min=1).float()
    else:
        denominator = torch.as_tensor(num_items_in_batch, device=logits.device, dtype=torch.float32)
    ce, z, max_z, token_ce = _FusedLanguageModelLoss.apply(logits.reshape(-1, logits.shape[-1]), targets, denominator)
    if return_token_loss:
        return ce, z, max_z, token_ce.view(shift_labels.shape)
    return ce, z, max_z


class _ChunkedLanguageModelLoss(torch.autograd.Function):
    """Output head + cross-entropy + z-loss + max-z loss, chunk by chunk over the tokens: no `[tokens, vocab]` tensor.

    Why this exists: with the fused loss above, a training step still holds the full logits, their softmax and
    their gradient (2x the fp32 logits at the paper's 139,776-piece vocabulary, more than the whole model's
    activations at small widths). Peers that avoid the logits (Liger, Cut Cross-Entropy, TRL's chunked log-probs,
    `F.linear_cross_entropy`) compute no max-z loss, so this is Wonton's own.

    Design: gradients in the forward (Liger's choice), not recomputation in the backward. Each chunk's logits
    `h @ W^T + b` are built once into a reused buffer, turned in place into the loss statistics and then into
    d loss / d logits (the same closed form as `_FusedLanguageModelLoss`), which immediately yields the chunk's
    contribution to d hidden (`g @ W`), d W (`g^T @ h`, accumulated) and d b (`sum g`). That costs the three
    matmuls of an unchunked head (forward, two backward) and one pass of `exp`; recomputing in the backward
    would cost a fourth matmul and a second `exp`. The price: the gradient is that of the combined objective
    `ce + z_loss_coef * z + max_z_loss_coef * max_z`, so only `loss` is differentiable; the three terms are
    returned detached for logging. Memory: one `[chunk, vocab]` buffer (plus its low-precision copy under
    autocast) and a weight-sized fp32 gradient, released once the backward has scaled it by the incoming
    gradient (`grad_output`: gradient accumulation, loss scaling).

    Precision: logits are computed in the autocast dtype when autocast is on (exactly as `nn.Linear` would),
    everything after in fp32 or wider (float64 inputs stay float64); the weight gradient accumulates in fp32.
    """

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        denominator: torch.Tensor,
        z_coef: float,
        max_z_coef: float,
        chunk_size: int,
        compute_dtype: torch.dtype,
        needs_grad: tuple[bool, bool, bool],
    ):
        acc = torch.promote_types(torch.promote_types(hidden.dtype, weight.dtype), torch.float32)
        n_tokens, vocab = hidden.shape[0], weight.shape[0]
        device = hidden.device
        grad_h, grad_w, grad_b = needs_grad
        grad_hidden = torch.zeros_like(hidden) if grad_h else None
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=device) if grad_w else None
        grad_bias = torch.zeros(vocab, dtype=acc, device=device) if grad_b and bias is not None else None
        ce_sum = torch.zeros((), dtype=acc, device=device)
        z_sum = torch.zeros((), dtype=acc, device=device)
        max_z_sum = torch.zeros((), dtype=acc, device=device)
        token_ce = torch.zeros(n_tokens, dtype=acc, device=device)
        w_c = weight.to(compute_dtype)  # cast once (what autocast would do per matmul)
        b_c = bias.to(compute_dtype) if bias is not None else None
        # One buffer for every chunk's logits: a fresh multi-hundred-MB tensor per chunk would be page-faulted
        # and zeroed by the OS each time (on CPU, the cost that dominates an unchunked head). Eager only.
        reuse = compute_dtype == acc and not is_tracing(hidden)
        buffer = torch.empty((min(chunk_size, n_tokens), vocab), dtype=acc, device=device) if reuse else None
        with torch.autocast(device.type, enabled=False):
            for start in range(0, n_tokens, chunk_size):
                end = min(start + chunk_size, n_tokens)
                h = hidden[start:end].to(compute_dtype)
                if reuse:
                    logits = buffer[: end - start]
                    if b_c is None:
                        torch.mm(h, w_c.t(), out=logits)
                    else:
                        torch.addmm(b_c, h, w_c.t(), out=logits)
                else:
                    logits = (h @ w_c.t() if b_c is None else torch.addmm(b_c, h, w_c.t())).to(acc)
                t = targets[start:end]
                keep = t != -100
                safe = t.masked_fill(~keep, 0)
                token_weight = keep.to(acc) / denominator
                top, top_index = logits.max(dim=-1)
                target_logit = logits.gather(1, safe[:, None]).squeeze(1)
                shifted_exp = logits.sub_(top[:, None]).exp_()  # in place: the buffer now holds exp(logits - max)
                sum_exp = shifted_exp.sum(dim=-1)
                lse = sum_exp.log() + top
                chunk_ce = (lse - target_logit).masked_fill(~keep, 0.0)
                token_ce[start:end] = chunk_ce
                ce_sum += (chunk_ce * token_weight).sum()
                z_sum += (lse.square() * token_weight).sum()
                max_z_sum += (top.square() * token_weight).sum()
                if not any(needs_grad):
                    continue
                # d loss / d logits, in place: softmax * (1 + 2 z_coef lse) - onehot(target) + 2 max_z_coef max onehot(argmax)
                grad = shifted_exp.mul_(((1.0 + 2.0 * z_coef * lse) * token_weight / sum_exp)[:, None])
                rows = torch.arange(end - start, device=device)
                grad.index_put_((rows, safe), -token_weight, accumulate=True)
                grad.index_put_((rows, top_index), 2.0 * max_z_coef * top * token_weight, accumulate=True)
                grad_c = grad.to(compute_dtype)
                if grad_hidden is not None:
                    grad_hidden[start:end] = grad_c @ w_c
                if grad_weight is not None:
                    if grad_c.dtype == acc:
                        grad_weight.addmm_(grad_c.t(), h)
                    else:
                        grad_weight += grad_c.t() @ h
                if grad_bias is not None:
                    grad_bias += grad.sum(dim=0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.spent = False
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        loss = ce_sum + z_coef * z_sum + max_z_coef * max_z_sum
        ctx.mark_non_differentiable(ce_sum, z_sum, max_z_sum, token_ce)
        return loss, ce_sum, z_sum, max_z_sum, token_ce

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, *_unused):
        if ctx.spent:
            raise RuntimeError(
                "The chunked Wonton loss scales its saved gradients in place: backward can run only once."
            )
        ctx.spent = True
        grads = ctx.saved_tensors
        out = []
        for grad, dtype in zip(grads, ctx.dtypes, strict=True):
            out.append(None if grad is None else grad.mul_(grad_loss.to(grad.dtype)).to(dtype))
        return (*out, None, None, None, None, None, None, None)


def chunked_language_model_loss(
    hidden_states: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor | None = None,
    shift_labels: torch.Tensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    z_loss_coef: float = 0.0,
    max_z_loss_coef: float = 0.0,
    chunk_size: int = 1024,
    skip_ignored: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`language_model_loss(hidden_states @ weight.T + bias, ...)` without ever holding the logits.

    Returns `(loss, ce, z, max_z, token_ce)`: `loss = ce + z_loss_coef * z + max_z_loss_coef * max_z` is the only
    differentiable output (see `_ChunkedLanguageModelLoss`); `token_ce` is shaped like the shifted labels. Same
    tokens and denominator as `language_model_loss`. Eagerly (and with `skip_ignored`), rows whose label is -100 are
    dropped before the head
    (they contribute to nothing): padding and prompt tokens cost no vocabulary work. Under `torch.compile` every row
    is scored (no data-dependent shapes).
    """
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=-100)[..., 1:]
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
    targets = shift_labels.reshape(-1).to(hidden.device)
    if targets.shape[0] != hidden.shape[0]:
        raise ValueError(
            f"{targets.shape[0]} labels for {hidden.shape[0]} scored positions: labels must cover the positions "
            "kept by `logits_to_keep`."
        )
    keep = targets != -100
    if num_items_in_batch is None:
        denominator = keep.sum().clamp(min=1).to(torch.float32)
    else:
        denominator = torch.as_tensor(num_items_in_batch, device=hidden.device, dtype=torch.float32)
    if hidden.dtype == torch.float64:
        denominator = denominator.double()
    device_type = hidden.device.type
    autocast_on = torch.is_autocast_enabled(device_type)
    compute_dtype = (
        torch.get_autocast_dtype(device_type) if autocast_on else torch.promote_types(hidden.dtype, weight.dtype)
    )
    grad_on = torch.is_grad_enabled()
    needs_grad = (
        grad_on and hidden.requires_grad,
        grad_on and weight.requires_grad,
        grad_on and bias is not None and bias.requires_grad,
    )
    compact = skip_ignored and not is_tracing(hidden)
    if compact:
        index = keep.nonzero().squeeze(1)
        hidden, targets = hidden.index_select(0, index), targets.index_select(0, index)
    loss, ce, z, max_z, token_ce = _ChunkedLanguageModelLoss.apply(
        hidden, weight, bias, targets, denominator, z_loss_coef, max_z_loss_coef, chunk_size, compute_dtype, needs_grad
    )
    if compact:
        token_ce = token_ce.new_zeros(keep.shape).index_copy_(0, index, token_ce)
    return loss, ce, z, max_z, token_ce.view(shift_labels.shape)


class WontonForCausalLM(WontonPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # only used if tie_word_embeddings
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: WontonConfig):
        super().__init__(config)
        self.model = WontonModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=config.use_bias)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        return_token_loss: bool = False,
        return_logits: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> WontonCausalLMOutputWithPast:
        r"""
        labels: next-token targets aligned with `input_ids` (shifted inside); -100 is ignored by every
            loss term. Packed rows: pass `position_ids` restarting at 0 per document.
        return_token_loss: also return `token_loss`, the per-token cross-entropy of the fused loss (detached),
            for per-source accounting without a second pass over the logits.
        return_logits: whether `logits` are returned when a loss is computed. Default (`None`): a training step
            (`model.training`, grad enabled, labels given, `config.loss_chunk_size > 0`) runs the chunked head
            (`chunked_language_model_loss`): the `[tokens, vocab]` logits are never built, `logits` is `None`,
            only `loss` carries a gradient (`ce_loss`, `z_loss`, `max_z_loss` are detached) and `logits_mean`
            holds the per-token mean logit for monitors. Evaluation (`model.eval()` or no grad) and generation
            keep the logits. `True` forces the logits (and the unchunked fused loss); `False` forces the
            chunked head whenever there are labels, also under `no_grad` (a memory-light evaluation loss).
        """
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        hidden_states = hidden_states[:, slice_indices, :]

        head = self._head_and_loss(hidden_states, labels, return_logits, kwargs)
        logits, logits_mean, loss, ce_loss, z_loss, max_z_loss, token_loss = head

        return WontonCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            ce_loss=ce_loss,
            z_loss=z_loss,
            max_z_loss=max_z_loss,
            token_loss=token_loss if return_token_loss else None,
            logits_mean=logits_mean,
        )

    def _use_chunked_head(self, has_labels: bool, return_logits: bool | None) -> bool:
        chunked = has_labels and self.config.loss_chunk_size > 0 and return_logits is not True
        if return_logits is None:
            chunked = chunked and self.training and torch.is_grad_enabled()
        # Under tensor parallelism `lm_head` is a vocab-sharded DTensor that the chunked head's plain matmuls
        # cannot take: the full logits (gathered by the `colwise_gather_output` plan) and the fused loss instead.
        return chunked and (getattr(self, "_tp_size", None) or 1) == 1

    def _head_and_loss(
        self, hidden_states: torch.Tensor, labels: torch.Tensor | None, return_logits: bool | None, kwargs: dict
    ) -> tuple[torch.Tensor | None, ...]:
        """(logits, logits_mean, loss, ce_loss, z_loss, max_z_loss, token_loss): the chunked head when training
        with labels (no logits), else the full logits and, with labels, the fused loss."""
        has_labels = labels is not None or kwargs.get("shift_labels") is not None
        logits = logits_mean = loss = ce_loss = z_loss = max_z_loss = token_loss = None
        if self._use_chunked_head(has_labels, return_logits):
            loss, ce_loss, z_loss, max_z_loss, token_loss = chunked_language_model_loss(
                hidden_states,
                self.lm_head.weight,
                self.lm_head.bias,
                labels,
                shift_labels=kwargs.get("shift_labels"),
                num_items_in_batch=kwargs.get("num_items_in_batch"),
                z_loss_coef=self.config.z_loss_coef,
                max_z_loss_coef=self.config.max_z_loss_coef,
                chunk_size=self.config.loss_chunk_size,
            )
            with torch.no_grad():  # mean over the vocabulary of h W^T + b, without the logits
                weight, bias = self.lm_head.weight, self.lm_head.bias
                logits_mean = hidden_states.float() @ weight.mean(0, dtype=torch.float32)
                if bias is not None:
                    logits_mean += bias.mean(dtype=torch.float32)
        else:
            logits = self.lm_head(hidden_states)
            if has_labels:
                ce_loss, z_loss, max_z_loss, token_loss = language_model_loss(
                    logits,
                    labels,
                    shift_labels=kwargs.get("shift_labels"),
                    num_items_in_batch=kwargs.get("num_items_in_batch"),
                    return_token_loss=True,
                )
                loss = ce_loss + self.config.z_loss_coef * z_loss + self.config.max_z_loss_coef * max_z_loss
        return logits, logits_mean, loss, ce_loss, z_loss, max_z_loss, token_loss


__all__ = [
    "WontonPreTrainedModel",
    "WontonModel",
    "WontonForCausalLM",
    "WontonCausalLMOutputWithPast",
    "WontonAttentionProbe",
    "language_model_loss",
    "chunked_language_model_loss",
]
