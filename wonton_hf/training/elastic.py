"""Resume on another world size: DeepSpeed ZeRO checkpoints are converted to DeepSpeed's universal format.

A ZeRO-2 checkpoint holds each rank's slice of the fp32 master weights and Adam moments; DeepSpeed refuses it
on another data-parallel size (`ZeRORuntimeException: ... used a DP world size of 2 but the current world size
is 1`). DeepSpeed's own answer is the universal checkpoint: `deepspeed.checkpoint.ds_to_universal` merges the
slices into one folder per parameter (fp32 weight, `exp_avg`, `exp_avg_sq`, step) and the engine re-slices them
for the new world when its config says `{"checkpoint": {"load_universal": true}}`. Here that is automatic: when
the checkpoint's world size (recorded in its `COMPLETE` marker) differs from this run's, rank 0 converts it into
`checkpoint-N/global_stepN_universal` (cached: a later resume on yet another size reuses it; it is not part of
the manifest), every rank waits, and the engine is told to load universally. Model weights, the Trainer's state
(step, monitors' state), the LR scheduler (in DeepSpeed's model-states file) and the data scheduler's state
(already elastic) carry over; the per-rank RNG states cannot (their count changed).

DDP needs none of this: its `optimizer.pt` is the full state on every rank. Nor does FSDP2: its sharded
checkpoints are torch DCP directories, which `dcp.load` reads into whatever sharding the loading ranks have.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from ..checkpointing.protocol import read_marker
from ..distributed import barrier, broadcast_object, is_main_process, world_size

logger = logging.getLogger(__name__)

_DONE = "CONVERTED"


def saved_world_size(checkpoint: str | Path) -> int | None:
    """The number of ranks that wrote `checkpoint`: from its marker, else from its per-rank RNG files."""
    checkpoint = Path(checkpoint)
    recorded = read_marker(checkpoint).get("world_size")
    if isinstance(recorded, int):
        return recorded
    rng_files = list(checkpoint.glob("rng_state_*.pth"))
    return len(rng_files) or (1 if (checkpoint / "rng_state.pth").is_file() else None)


def deepspeed_tag(checkpoint: str | Path) -> Path | None:
    """`checkpoint-N/global_stepN` (what DeepSpeed's `latest` names), or None for a checkpoint without ZeRO shards."""
    latest = Path(checkpoint) / "latest"
    if latest.is_file():
        folder = Path(checkpoint) / latest.read_text().strip()
        return folder if folder.is_dir() else None
    return None


def convert_to_universal(checkpoint: str | Path) -> Path:
    """`ds_to_universal` on `checkpoint` (once: cached next to it with a `CONVERTED` marker); returns the folder."""
    from deepspeed.checkpoint import ds_to_universal

    checkpoint = Path(checkpoint)
    tag = deepspeed_tag(checkpoint)
    if tag is None:
        raise FileNotFoundError(f"{checkpoint} has no DeepSpeed shards (no `latest` file) to convert")
    output = checkpoint / f"{tag.name}_universal"
    if (output / _DONE).is_file():
        (checkpoint / "latest_universal").write_text(output.name)
        logger.info("World size changed: reusing the universal checkpoint %s (converted earlier)", output)
        return output
    started = time.perf_counter()
    args = argparse.Namespace(
        input_folder=str(tag),
        output_folder=str(output),
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,  # HF models carry no universal-checkpoint info of their own
    )
    ds_to_universal.main(args)  # also writes checkpoint/latest_universal
    (output / _DONE).write_text(str(time.time()))
    logger.info(
        "World size changed: converted %s to DeepSpeed's universal format in %.1f s", tag, time.perf_counter() - started
    )
    return output


def prepare_world_size_change(trainer: Any, checkpoint: str | Path | None) -> str | None:
    """If `checkpoint` was written by another world size under DeepSpeed: convert (rank 0, cached), and make the
    engine load it universally. Returns a line for the log, or None when nothing changes. Call on every rank."""
    if checkpoint is None:
        return None
    saved, current = saved_world_size(checkpoint), world_size()
    if saved is None or saved == current:
        return None
    if getattr(trainer, "is_fsdp_enabled", False):
        return (
            f"World size changed ({saved} -> {current}): torch DCP reshards the FSDP model and optimizer state in "
            f"{checkpoint} (weights, Adam moments, LR schedule, step and data state carry over; per-rank RNG states "
            "do not)."
        )
    if not getattr(trainer, "is_deepspeed_enabled", False) or deepspeed_tag(checkpoint) is None:
        return f"World size changed ({saved} -> {current}): the full optimizer state in {checkpoint} is loaded as is."
    error = None
    if is_main_process():
        try:
            convert_to_universal(checkpoint)
        except Exception as exc:  # noqa: BLE001 - reported on every rank below
            error = f"{type(exc).__name__}: {exc}"
    error = broadcast_object(error)
    barrier()
    if error:
        raise RuntimeError(
            f"Converting {checkpoint} for world size {current} (it was saved by {saved}) failed: {error}"
        )
    configs = [trainer.accelerator.state.deepspeed_plugin.deepspeed_config]
    hf_config = getattr(trainer.args, "hf_deepspeed_config", None)
    if hf_config is not None:
        configs.append(hf_config.config)
    for config in configs:
        config.setdefault("checkpoint", {})["load_universal"] = True
    return (
        f"World size changed ({saved} -> {current}): resuming {checkpoint} through DeepSpeed's universal checkpoint "
        f"({Path(checkpoint) / (deepspeed_tag(checkpoint).name + '_universal')}); weights, Adam moments, LR schedule, "
        "step and data state carry over, per-rank RNG states do not."
    )


__all__ = ["convert_to_universal", "deepspeed_tag", "prepare_world_size_change", "saved_world_size"]
