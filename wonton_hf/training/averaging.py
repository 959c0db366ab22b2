"""Checkpoint averaging: the mean of the last K complete checkpoints' weights, saved as a loadable model.

Why averaging saved checkpoints rather than an EMA kept by a callback: the checkpoints exist anyway (the
run's resume points), so averaging costs nothing while training — an EMA would hold a second fp32 copy of
the weights on every rank and touch every parameter every step, and under ZeRO-2 each rank would first need
the full parameters. K can be chosen after the run (and tried at several values); an EMA's decay must be
fixed before it. Replacing the LR decay by averaging is the point of arXiv 2511.18903 (curricula keep their
gain under a constant LR plus averaging) and of Sanyal et al. 2023 (LAWA, arXiv 2306.03241, which averages the
last checkpoints of a run).

Only complete checkpoints count (the `COMPLETE` marker of `training.checkpoints`): one a crash cut short is
never averaged. The weights are read from each checkpoint's safetensors files (`model.safetensors` or the
shards of `model.safetensors.index.json`) one checkpoint at a time into one fp32 accumulator per shard, then
cast back to the stored dtype in place: the peak is one fp32 copy of a shard plus one tensor being read. The
Trainer saves full weights there under DDP and ZeRO-2 (ZeRO-2 partitions the optimizer state, not the
parameters); ZeRO-3 checkpoints hold only partitions unless `stage3_gather_16bit_weights_on_model_save` is on,
and are refused with that hint.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .checkpoints import checkpoint_step, is_complete, list_checkpoints

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "vocab.json", "merges.txt",
               "tokenizer.model")
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
        raise ValueError(f"{run_dir}: {len(complete)} complete checkpoint(s), {last} asked for averaging{skipped}. "
                         "Lower --last (train.average_last) or keep more checkpoints (train.save_total_limit).")
    return complete[-last:]


def weight_shards(checkpoint: Path) -> list[str]:
    """The safetensors file names holding `checkpoint`'s weights; a clear error where there are none."""
    if (checkpoint / WEIGHTS_INDEX).is_file():
        index = json.loads((checkpoint / WEIGHTS_INDEX).read_text(encoding="utf-8"))
        return sorted(set(index["weight_map"].values()))
    if (checkpoint / WEIGHTS).is_file():
        return [WEIGHTS]
    if any(checkpoint.glob("global_step*")):
        raise ValueError(f"{checkpoint} holds DeepSpeed partitions but no {WEIGHTS} (ZeRO-3 without "
                         "`stage3_gather_16bit_weights_on_model_save: true`): set it, or run the checkpoint's "
                         "zero_to_fp32.py first.")
    raise ValueError(f"{checkpoint} has no {WEIGHTS} nor {WEIGHTS_INDEX} (weights saved with "
                     "`save_safetensors=False` cannot be streamed; re-save them as safetensors).")


def _average_shard(files: list[Path]) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    """The element-wise mean of the same shard in several checkpoints, accumulated in fp32, one file at a time."""
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    metadata = None
    for i, path in enumerate(files):
        with safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
            if i == 0:
                metadata = handle.metadata()
            elif keys != set(total):
                differ = sorted(keys ^ set(total))[:5]
                raise ValueError(f"{path} does not hold the same tensors as {files[0]} (e.g. {differ}): "
                                 "checkpoints of different models cannot be averaged.")
            for key in sorted(keys):
                tensor = handle.get_tensor(key)
                if i == 0:
                    dtypes[key] = tensor.dtype
                    total[key] = tensor.to(torch.float32, copy=True)
                elif tensor.shape != total[key].shape:
                    raise ValueError(f"{path}: {key} has shape {tuple(tensor.shape)}, {files[0]} has "
                                     f"{tuple(total[key].shape)}.")
                else:
                    total[key] += tensor.to(torch.float32)
                del tensor
    for key in total:  # back to the stored dtype, one tensor at a time (the fp32 copy goes as each is cast)
        total[key] = total[key].div_(len(files)).to(dtypes[key])
    return total, metadata


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
        averaged, metadata = _average_shard([checkpoint / shard for checkpoint in chosen])
        tensors += len(averaged)
        parameters += sum(t.numel() for t in averaged.values())
        save_file(averaged, str(tmp / shard), metadata=metadata or {"format": "pt"})
        del averaged
    newest = chosen[-1]
    for path in sorted(newest.iterdir()):
        wanted = path.name in MODEL_FILES or (path.suffix == ".py" and path.name != "zero_to_fp32.py")
        if path.is_file() and (wanted or path.name == WEIGHTS_INDEX):
            shutil.copy2(path, tmp / path.name)
    report = AveragingReport(str(output), [str(c) for c in chosen], [checkpoint_step(c) or 0 for c in chosen],
                             tensors, parameters, time.perf_counter() - started)
    (tmp / "averaging.json").write_text(json.dumps(asdict(report), indent=1), encoding="utf-8")
    if output.exists():
        shutil.rmtree(output)
    os.replace(tmp, output)
    return report


__all__ = ["AveragingReport", "average_checkpoints", "complete_checkpoints", "weight_shards"]
