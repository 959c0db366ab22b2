"""The training loss per source, from the per-token loss and the `source_ids` of each packed window.

Kept apart from the tracking callback because it is the one piece that depends on what the model returns.
Wonton returns the per-token cross-entropy its fused loss computes anyway (`return_token_loss=True`, asked
for by the tracking callback), so the accounting costs a scatter-add; for any other model the cross-entropy
is recomputed from the logits, row by row (a second pass over [tokens, vocab]). Two windows are kept over
the same numbers: since the last feedback update (`take_for_feedback`) and since the last log event
(`take_for_log`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ...distributed import is_distributed, reduce_device


class SourceLossMeter:
    """Per-source loss sums and token counts of the training batches, summed over ranks when taken."""

    def __init__(self, num_sources: int) -> None:
        self.num_sources = num_sources
        self._windows: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {"feedback": None, "log": None}

    def add_token_losses(self, token_loss: torch.Tensor, labels: torch.Tensor, source_ids: torch.Tensor) -> None:
        """`token_loss[:, t]` scores `labels[:, t + 1]` (a causal LM's `token_loss` output)."""
        device = token_loss.device
        with torch.no_grad():
            target = labels[:, 1:].to(device)
            source = source_ids[:, 1:].to(device)
            valid = (target != -100) & (source >= 0)
            sums = torch.zeros(self.num_sources, dtype=torch.float64, device=device)
            counts = torch.zeros(self.num_sources, dtype=torch.float64, device=device)
            sums.index_add_(0, source[valid], token_loss[:, :-1][valid].double())
            counts.index_add_(0, source[valid], torch.ones_like(sums[:1]).expand(int(valid.sum())))
        self._accumulate(sums, counts)

    def add(self, logits: torch.Tensor, labels: torch.Tensor, source_ids: torch.Tensor) -> None:
        """For models without `token_loss`: recompute the cross-entropy from the logits."""
        k = self.num_sources
        sums = torch.zeros(k, dtype=torch.float64, device=logits.device)
        counts = torch.zeros(k, dtype=torch.float64, device=logits.device)
        with torch.no_grad():
            for row in range(logits.shape[0]):  # one row at a time bounds the float32 copy of the logits
                target = labels[row, 1:].to(logits.device)
                source = source_ids[row, 1:].to(logits.device)
                loss = F.cross_entropy(logits[row, :-1].float(), target, ignore_index=-100, reduction="none")
                valid = (target != -100) & (source >= 0)
                sums.index_add_(0, source[valid], loss[valid].double())
                counts.index_add_(0, source[valid], torch.ones_like(loss[valid], dtype=torch.float64))
        self._accumulate(sums, counts)

    def _accumulate(self, sums: torch.Tensor, counts: torch.Tensor) -> None:
        for name, window in self._windows.items():
            self._windows[name] = (
                (sums.clone(), counts.clone()) if window is None else (window[0] + sums, window[1] + counts)
            )

    def _take(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss sums, token counts) per source since the last take of this window, over all ranks; resets it.

        Every rank must call it at the same step (a collective), whether or not it has seen a batch since.
        """
        window = self._windows[name]
        self._windows[name] = None
        if window is None:
            window = (
                torch.zeros(self.num_sources, dtype=torch.float64),
                torch.zeros(self.num_sources, dtype=torch.float64),
            )
        sums, counts = window
        if is_distributed():
            device = reduce_device()
            sums, counts = sums.to(device), counts.to(device)
            torch.distributed.all_reduce(sums)
            torch.distributed.all_reduce(counts)
        return sums.cpu(), counts.cpu()

    def take_for_feedback(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._take("feedback")

    def take_for_log(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._take("log")

    def log_metrics(self, names: list[str]) -> dict[str, Any]:
        """`data/loss/<source>`: mean training loss since the last log event, for the sources that had tokens."""
        sums, counts = self.take_for_log()
        return {
            f"data/loss/{name}": round(float(sums[i] / counts[i]), 4) for i, name in enumerate(names) if counts[i] > 0
        }
