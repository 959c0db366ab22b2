"""The one place that asks "is torch.distributed up?" and does the few collective steps the package needs.

Before the Trainer opens the process group, the launcher's environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`)
is the only source of truth, so `rank()` / `world_size()` read it when no group is up. torch is imported
inside the functions: the run-config checks import this module without paying for torch.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised (several ranks talk to each other)."""
    import torch

    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """This process's global rank: from the process group when one is up, else from the launcher's `RANK`."""
    if "torch" in sys.modules and is_distributed():
        import torch

        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    if "torch" in sys.modules and is_distributed():
        import torch

        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank; `[obj]` in one process."""
    if not is_distributed():
        return [obj]
    import torch

    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def is_main_process() -> bool:
    return rank() == 0


def is_local_main_process() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def barrier() -> None:
    """Wait for every rank; a no-op in a single process."""
    if is_distributed():
        import torch

        torch.distributed.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's value on every rank (decisions that must agree everywhere); the value itself in one process."""
    if not is_distributed():
        return obj
    import torch

    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def reduce_device() -> Any:
    """Where tensors must live for a collective: the current CUDA device under NCCL, else the CPU."""
    import torch

    if is_distributed() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(values: Any, op: str = "sum") -> Any:
    """`op` in {"sum", "max", "mean"} over ranks; the identity in one process."""
    if not is_distributed():
        return values
    import torch

    reduce_op = torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
    torch.distributed.all_reduce(values, op=reduce_op)
    return values / torch.distributed.get_world_size() if op == "mean" else values


def shutdown() -> None:
    """Close the process group before the interpreter exits.

    Left to interpreter teardown, gloo's worker threads can abort the process after a successful run
    ("terminate called without an active exception", exit -6), which the launcher reports as a failure.
    """
    if "torch" in sys.modules and is_distributed():
        import torch

        torch.distributed.destroy_process_group()
