"""Checkpoint averaging: the mean of the last K complete checkpoints' weights, saved as a loadable model.

Why averaging saved checkpoints rather than an EMA kept by a callback: the checkpoints exist anyway (the
run's resume points), so averaging costs nothing while training — an EMA would hold a second fp32 copy of
the weights on every rank and touch every parameter every step, and under ZeRO-2 each rank would first need
the full parameters. K can be chosen after the run (and tried at several values); an EMA's decay must be
fixed before it. Replacing the LR decay by averaging is the point of arXiv 2511.18903 (curricula keep their
gain under a constant LR plus averaging) and of Sanyal et al. 2023 (LAWA, arXiv 2306.03241, which averages the
last checkpoints of a run).

Only complete checkpoints count (the `COMPLETE` marker of `wonton_hf.checkpointing`): one a crash cut short is
never averaged. The weights are streamed tensor by tensor from each checkpoint's safetensors files
(`model.safetensors` or the shards of `model.safetensors.index.json`) into a safetensors file written as it
goes: the peak is one fp32 tensor plus the one being read, far under the "one model plus one accumulator"
the issue allows (`benchmarks/average_checkpoints.py` measures it). The
Trainer saves full weights there under DDP and ZeRO-2 (ZeRO-2 partitions the optimizer state, not the
parameters); ZeRO-3 checkpoints hold only partitions unless `stage3_gather_16bit_weights_on_model_save` is on,
and are refused with that hint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ..checkpointing.protocol import checkpoint_step, is_complete, list_checkpoints

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
"""What `save_pretrained` writes besides the weights (model and tokenizer); copied from the newest checkpoint,
with its `*.py` remote-code files. Optimizer, scheduler, RNG and data states stay behind."""


@dataclass
class AveragingReport:
    output: str
    checkpoints: list[str]
    steps: list[int]
    tensors: int
    parameters: int
    seconds: float


def complete_checkpoints(run_dir: str | Path, last: int) -> list[Path]:
    """The `last` newest complete `checkpoint-N` directories of `run_dir`, oldest first."""
    if last < 1:
        raise ValueError(f"`last` must be >= 1, got {last}.")
    checkpoints = list_checkpoints(run_dir)
    complete = [path for _, path in checkpoints if is_complete(path)]
    if len(complete) < last:
        incomplete = [path.name for _, path in checkpoints if not is_complete(path)]
        skipped = f"; incomplete (no COMPLETE marker, not used): {', '.join(incomplete)}" if incomplete else ""
        raise ValueError(
            f"{run_dir}: {len(complete)} complete checkpoint(s), {last} asked for averaging{skipped}. "
            "Lower --last (train.average_last) or keep more checkpoints (train.save_total_limit)."
        )
    return complete[-last:]


def weight_shards(checkpoint: Path) -> list[str]:
    """The safetensors file names holding `checkpoint`'s weights; a clear error where there are none."""
    if (checkpoint / WEIGHTS_INDEX).is_file():
        index = json.loads((checkpoint / WEIGHTS_INDEX).read_text(encoding="utf-8"))
        return sorted(set(index["weight_map"].values()))
    if (checkpoint / WEIGHTS).is_file():
        return [WEIGHTS]
    if any(checkpoint.glob("global_step*")):
        raise ValueError(
            f"{checkpoint} holds DeepSpeed partitions but no {WEIGHTS} (ZeRO-3 without "
            "`stage3_gather_16bit_weights_on_model_save: true`): set it, or run the checkpoint's "
            "zero_to_fp32.py first."
        )
    raise ValueError(
        f"{checkpoint} has no {WEIGHTS} nor {WEIGHTS_INDEX} (weights saved with "
        "`save_safetensors=False` cannot be streamed; re-save them as safetensors)."
    )


_ITEM_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
"""Bytes per element of the safetensors dtypes a model checkpoint holds."""


def _layout(path: Path) -> tuple[dict[str, tuple[str, list[int]]], dict[str, str] | None]:
    """name -> (safetensors dtype, shape) from a file's header, and its metadata; no tensor is read."""
    with safe_open(str(path), framework="pt") as handle:
        layout = {
            key: (handle.get_slice(key).get_dtype(), list(handle.get_slice(key).get_shape())) for key in handle.keys()
        }
        return layout, handle.metadata()


def _read(path: Path, key: str) -> torch.Tensor:
    # a handle per tensor: the file's mapped pages are released at once instead of piling up over the shard
    with safe_open(str(path), framework="pt") as handle:
        return handle.get_tensor(key)


def _average_shard(files: list[Path], target: Path) -> int:
    """Write the element-wise mean of the same shard in several checkpoints to `target`, one tensor at a time.

    The safetensors header (names, dtypes, shapes, offsets) is known from the inputs' headers, so the output
    is written as the tensors are averaged: memory holds one fp32 accumulator tensor and the tensor being
    read, never a whole shard. Floating-point tensors are averaged in fp32 and stored in their own dtype;
    others (integer buffers) are taken from the newest checkpoint. Returns the number of elements written.
    """
    layout, metadata = _layout(files[0])
    for path in files[1:]:
        other, _ = _layout(path)
        if other.keys() != layout.keys():
            differ = sorted(set(other) ^ set(layout))[:5]
            raise ValueError(
                f"{path} does not hold the same tensors as {files[0]} (e.g. {differ}): "
                "checkpoints of different models cannot be averaged."
            )
        for key, (dtype, shape) in other.items():
            if (dtype, shape) != layout[key]:
                raise ValueError(f"{path}: {key} is {dtype} {shape}, in {files[0]} {layout[key][0]} {layout[key][1]}.")
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for key in sorted(layout):
        dtype, shape = layout[key]
        size = math.prod(shape) * _ITEM_SIZE[dtype]
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(target, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for key in sorted(layout):
            newest = _read(files[-1], key)
            if newest.is_floating_point():
                total = newest.to(torch.float32, copy=True)
                for path in files[:-1]:
                    total += _read(path, key).to(torch.float32)
                newest = total.div_(len(files)).to(newest.dtype)
            out.write(newest.reshape(-1).view(torch.uint8).numpy().data)
        out.flush()
        os.fsync(out.fileno())
    return sum(math.prod(shape) for _, shape in layout.values())


def average_checkpoints(run_dir: str | Path, last: int, output: str | Path) -> AveragingReport:
    """Average the weights of `run_dir`'s `last` newest complete checkpoints into `output` (a model directory).

    `output` gets the averaged safetensors (same sharding as the checkpoints), the newest checkpoint's config,
    tokenizer and remote-code files, and `averaging.json` naming the checkpoints. It is written under a
    temporary name and renamed, so a crash never leaves a half-written model where a finished one is expected.
    """
    started = time.perf_counter()
    chosen = complete_checkpoints(run_dir, last)
    shards = weight_shards(chosen[-1])
    for checkpoint in chosen[:-1]:
        if weight_shards(checkpoint) != shards:
            raise ValueError(f"{checkpoint} is sharded differently from {chosen[-1]}: cannot average shard by shard.")
    output = Path(output)
    tmp = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = parameters = 0
    for shard in shards:
        parameters += _average_shard([checkpoint / shard for checkpoint in chosen], tmp / shard)
        tensors += len(_layout(tmp / shard)[0])
    newest = chosen[-1]
    for path in sorted(newest.iterdir()):
        wanted = path.name in MODEL_FILES or (path.suffix == ".py" and path.name != "zero_to_fp32.py")
        if path.is_file() and (wanted or path.name == WEIGHTS_INDEX):
            shutil.copy2(path, tmp / path.name)
    report = AveragingReport(
        str(output),
        [str(c) for c in chosen],
        [checkpoint_step(c) or 0 for c in chosen],
        tensors,
        parameters,
        time.perf_counter() - started,
    )
    (tmp / "averaging.json").write_text(json.dumps(asdict(report), indent=1), encoding="utf-8")
    if output.exists():
        shutil.rmtree(output)
    os.replace(tmp, output)
    return report


__all__ = ["AveragingReport", "average_checkpoints", "complete_checkpoints", "weight_shards"]
