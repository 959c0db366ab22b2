"""Stuffing: documents packed into full `seq_len` windows, as the paper's content stuffing.

Every position holds a real token (no padding except, once, at the very end of a finite stream). Each
document ends with EOS; a document longer than the room left in a window is cut and continues later in the
same shard (when its source is due again: see `ShardRun.next_chunk`; early in a run a document of a small
source may also be cut where its share would overshoot, see `multiplexer`). `position_ids`
restart at 0 at every document start and at every continuation, so a continued document is a fresh segment: the model
builds its block-diagonal mask from the restarts and never attends across documents, and positions never
exceed `seq_len - 1`, the range the model is trained on. The label of a segment's first token is -100: it
would be predicted from the previous document's EOS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100

Chunk = tuple[int, Sequence[int]]
"""(source index, tokens): one contiguous piece of one document inside a window (an int32 array from a stream)."""


@dataclass
class Window:
    input_ids: np.ndarray
    labels: np.ndarray
    position_ids: np.ndarray
    source_ids: np.ndarray


def fill_window(seq_len: int, next_chunk: Callable[[int], Chunk | None], pad_id: int) -> Window | None:
    """Fills one window by asking `next_chunk(room)` for pieces; None if the stream ended before any token."""
    # int64 arrays filled by slice copies (C speed) and turned into tensors without a copy; the labels are made
    # here, where the segment starts are known, rather than found again with masks over the window.
    input_ids = np.empty(seq_len, dtype=np.int64)
    position_ids = np.empty(seq_len, dtype=np.int64)
    source_ids = np.empty(seq_len, dtype=np.int64)
    filled = 0
    starts: list[int] = []
    while filled < seq_len:
        chunk = next_chunk(seq_len - filled)
        if chunk is None:
            break
        source, tokens = chunk
        n = len(tokens)
        input_ids[filled : filled + n] = tokens
        starts.append(filled)
        position_ids[filled : filled + n] = _arange(n)
        source_ids[filled : filled + n] = source
        filled += n
    if not filled:
        return None
    if filled < seq_len:  # the end of a finite stream: pad once rather than drop the last documents
        input_ids[filled:] = pad_id
        position_ids[filled:] = _arange(seq_len - filled)
        source_ids[filled:] = -1
    labels = input_ids.copy()
    labels[starts] = IGNORE_INDEX  # a segment's first token would be predicted from the previous document
    labels[filled:] = IGNORE_INDEX
    return Window(input_ids, labels, position_ids, source_ids)


_ARANGE = np.arange(8192, dtype=np.int64)


def _arange(n: int) -> np.ndarray:
    return _ARANGE[:n] if n <= len(_ARANGE) else np.arange(n, dtype=np.int64)


def window_tensors(window: Window) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.from_numpy(window.input_ids),
        "labels": torch.from_numpy(window.labels),
        "position_ids": torch.from_numpy(window.position_ids),
        "source_ids": torch.from_numpy(window.source_ids),
    }
