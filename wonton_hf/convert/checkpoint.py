"""Original Wonton checkpoints (nyonicai `GPTModel` state dicts) -> `save_pretrained` directories.

The original layout (see PAPER_NOTES.md) already stacks q, k, v as [q; k; v] with heads contiguous, which
is exactly `WontonAttention.qkv_proj`; conversion is therefore a pure renaming, checked key by key and
shape by shape against the target config before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from accelerate import init_empty_weights

from ..models.wonton import WontonConfig, WontonForCausalLM

_LAYER = r"transformer_encoder\.layers\.(\d+)\."
# original name (regex) -> our name; `{}` is the layer index. Both `out_proj_weight` (the documented
# flat form) and `out_proj.weight` (nn.MultiheadAttention's form) are accepted.
_RENAMES: list[tuple[str, str]] = [
    (r"embedding\.weight", "model.embed_tokens.weight"),
    (r"embedding\.token_value_embedding\.weight", "model.embed_tokens.weight"),
    (r"embedding\.token_position_embedding\.weight", "model.embed_positions.weight"),
    (_LAYER + r"self_attn\.in_proj_(weight|bias)", "model.layers.{0}.self_attn.qkv_proj.{1}"),
    (_LAYER + r"self_attn\.out_proj[_.](weight|bias)", "model.layers.{0}.self_attn.o_proj.{1}"),
    (_LAYER + r"self_attn\.q_layer_norm\.(weight|bias)", "model.layers.{0}.self_attn.q_norm.{1}"),
    (_LAYER + r"self_attn\.k_layer_norm\.(weight|bias)", "model.layers.{0}.self_attn.k_norm.{1}"),
    (_LAYER + r"linear1\.(weight|bias)", "model.layers.{0}.mlp.up_proj.{1}"),
    (_LAYER + r"linear2\.(weight|bias)", "model.layers.{0}.mlp.down_proj.{1}"),
    (_LAYER + r"norm1\.(weight|bias)", "model.layers.{0}.input_layernorm.{1}"),
    (_LAYER + r"norm2\.(weight|bias)", "model.layers.{0}.post_attention_layernorm.{1}"),
    (r"transformer_encoder\.norm\.(weight|bias)", "model.norm.{0}"),
    (r"linear\.(weight|bias)", "lm_head.{0}"),
]
_COMPILED = [(re.compile(pattern + r"$"), target) for pattern, target in _RENAMES]


def load_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a `.pt` file holding the state dict itself or under `module` (DeepSpeed) / `state_dict`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("module", "state_dict"):
        if isinstance(payload, Mapping) and isinstance(payload.get(key), Mapping):
            payload = payload[key]
            break
    if not isinstance(payload, Mapping) or not all(torch.is_tensor(v) for v in payload.values()):
        raise ValueError(
            f"{path} holds no state dict: expected a dict of tensors, or one under the key 'module' or 'state_dict'."
        )
    # DeepSpeed/DDP wrappers sometimes leave a `module.` prefix on every key.
    return {key.removeprefix("module."): tensor for key, tensor in payload.items()}


def rename_original_keys(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map original names to ours; returns the renamed dict and the original keys that matched no rule."""
    renamed: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        for pattern, target in _COMPILED:
            match = pattern.match(key)
            if match:
                renamed[target.format(*match.groups())] = tensor
                break
        else:
            unknown.append(key)
    return renamed, unknown


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], config: WontonConfig) -> dict[str, torch.Tensor]:
    """Rename and validate against `config`: every expected key present, none left over, every shape equal."""
    renamed, unknown = rename_original_keys(state_dict)
    with init_empty_weights():
        expected = {name: param.shape for name, param in WontonForCausalLM(config).state_dict().items()}
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(unknown + [k for k in renamed if k not in expected])
    if missing or unexpected:
        raise ValueError(
            "The checkpoint does not match the config "
            f"(position_embedding_type={config.position_embedding_type!r}, qk_layernorm={config.qk_layernorm}, "
            f"num_hidden_layers={config.num_hidden_layers}, use_bias={config.use_bias}). "
            f"Missing keys (ours): {missing or 'none'}. Unexpected keys: {unexpected or 'none'}."
        )
    mismatched = [
        f"{name}: checkpoint {tuple(renamed[name].shape)} vs config {tuple(shape)}"
        for name, shape in expected.items()
        if tuple(renamed[name].shape) != tuple(shape)
    ]
    if mismatched:
        raise ValueError("Tensor shapes do not match the config: " + "; ".join(mismatched))
    return renamed


def resolve_config(config: str | Path | WontonConfig) -> WontonConfig:
    """A preset name, a `config.json` (or its directory) written by `WontonConfig.save_pretrained`, or a config."""
    if isinstance(config, WontonConfig):
        return config
    path = Path(config)
    if path.exists():
        return WontonConfig.from_pretrained(path.parent if path.is_file() else path)
    return WontonConfig.from_preset(str(config))


def convert_checkpoint(
    checkpoint: str | Path,
    config: str | Path | WontonConfig,
    output_dir: str | Path,
    dtype: str = "auto",
) -> WontonForCausalLM:
    """Convert an original `.pt` checkpoint into a `save_pretrained` directory and return the model.

    `dtype="auto"` keeps the checkpoint's own dtype (a bf16 checkpoint stays bf16 on disk).
    """
    config = resolve_config(config)
    weights = convert_state_dict(load_original_state_dict(checkpoint), config)
    target_dtype = next(iter(weights.values())).dtype if dtype == "auto" else getattr(torch, dtype)
    # Parameters on the meta device (no 2x memory for a 7B), buffers (RoPE frequencies) real.
    with init_empty_weights(include_buffers=False):
        model = WontonForCausalLM(config)
    model.load_state_dict({k: v.to(target_dtype) for k, v in weights.items()}, strict=True, assign=True)
    model.config.dtype = target_dtype
    model.save_pretrained(output_dir)
    return model.eval()
