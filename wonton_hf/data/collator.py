"""Windows -> batches.

Windows are already full, so collation is stacking. `source_ids` and the last window's `data_state` ride
along to the model call, where `DataSchedulerCallback` takes them off before the model sees them (they
are what lets the callback attribute the loss to sources and know what was consumed).
`return_flash_attn_kwargs` adds `cu_seq_lens_q/k` and `max_length_q/k` for flash-attention varlen kernels,
computed over the batch flattened to one row, as transformers' `prepare_fa_kwargs_from_position_ids` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import get_worker_info

FIELDS = ("input_ids", "labels", "position_ids", "source_ids")


@dataclass
class PackedWindowCollator:
    return_flash_attn_kwargs: bool = False
    """Add `cu_seq_lens_q/k`, `max_length_q/k` (for flash varlen; not needed by sdpa/eager/flex)."""
    keep_scheduler_fields: bool = True
    """Keep `source_ids` and `data_state` (needed by `DataSchedulerCallback`); False for a bare model call."""

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        # The four fields share one buffer: a DataLoader worker then hands the batch over as one shared-memory
        # segment instead of four, which halves the cost of the hand-over (benchmarks/data_scheduler_throughput.py).
        # In a worker the buffer is made in shared memory (as torch's `default_collate` does), so handing it over
        # does not copy it there first.
        first = torch.as_tensor(items[0]["input_ids"])
        shape = (len(FIELDS), len(items), *first.shape)
        if get_worker_info() is not None:
            storage = torch.UntypedStorage._new_shared(math.prod(shape) * 8)
            buffer = torch.empty(0, dtype=torch.long).set_(storage).view(shape)
        else:
            buffer = torch.empty(shape, dtype=torch.long)
        batch: dict[str, Any] = {}
        for row, key in zip(buffer, FIELDS, strict=True):
            torch.stack([torch.as_tensor(item[key], dtype=torch.long) for item in items], out=row)
            batch[key] = row
        if "eval_index" in items[0]:  # evaluation windows (`callbacks.held_out`): which window each row is
            batch["eval_index"] = torch.tensor([int(item["eval_index"]) for item in items], dtype=torch.long)
        if self.keep_scheduler_fields:
            if "data_state" in items[-1]:
                batch["data_state"] = items[-1]["data_state"]
        else:
            del batch["source_ids"]
        if self.return_flash_attn_kwargs:
            batch.update(flash_attn_kwargs(batch["position_ids"]))
        return batch


def flash_attn_kwargs(position_ids: torch.Tensor) -> dict[str, Any]:
    flat = position_ids.reshape(-1)  # (B*T,)
    starts = torch.nonzero(flat == 0).flatten()
    cu = torch.cat([starts, torch.tensor([flat.numel()])]).to(torch.int32)
    max_length = int((cu[1:] - cu[:-1]).max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max_length, "max_length_k": max_length}
