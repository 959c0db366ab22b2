"""Stuffing: documents packed into full `seq_len` windows, as the paper's content stuffing.

Every position holds a real token (no padding except, once, at the very end of a finite stream). Each
document ends with EOS; a document longer than the room left in a window is cut and continues later in the
same shard (when its source is due again: see `_ShardRun.next_chunk`; early in a run a document of a small
source may also be cut where its share would overshoot, see `multiplexer`). `position_ids`
restart at 0 at every document start and at every continuation, so a continued document is a fresh segment: the model
builds its block-diagonal mask from the restarts and never attends across documents, and positions never
exceed `seq_len - 1`, the range the model is trained on. The label of a segment's first token is -100: it
would be predicted from the previous document's EOS.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100

Chunk = tuple[int, list[int]]
"""(source index, tokens): one contiguous piece of one document inside a window."""


@dataclass
class Window:
    input_ids: array
    position_ids: array
    source_ids: array


def fill_window(seq_len: int, next_chunk: Callable[[int], Chunk | None], pad_id: int) -> Window | None:
    """Fills one window by asking `next_chunk(room)` for pieces; None if the stream ended before any token."""
    # int64 arrays: filled at C speed from the token lists and turned into tensors without a copy.
    input_ids, position_ids, source_ids = array("q"), array("q"), array("q")
    while len(input_ids) < seq_len:
        chunk = next_chunk(seq_len - len(input_ids))
        if chunk is None:
            break
        source, tokens = chunk
        input_ids.extend(tokens)
        position_ids.extend(_ARANGE[: len(tokens)] if len(tokens) <= len(_ARANGE) else array("q", range(len(tokens))))
        source_ids.extend(array("q", (source,)) * len(tokens))
    if not input_ids:
        return None
    missing = seq_len - len(input_ids)
    if missing:  # the end of a finite stream: pad once rather than drop the last documents
        input_ids.extend(array("q", (pad_id,)) * missing)
        position_ids.extend(array("q", range(missing)))
        source_ids.extend(array("q", (-1,)) * missing)
    return Window(input_ids, position_ids, source_ids)


_ARANGE = array("q", range(8192))


def window_tensors(window: Window) -> dict[str, torch.Tensor]:
    input_ids = torch.frombuffer(window.input_ids, dtype=torch.long)
    position_ids = torch.frombuffer(window.position_ids, dtype=torch.long)
    source_ids = torch.frombuffer(window.source_ids, dtype=torch.long)
    labels = input_ids.clone()
    labels[position_ids == 0] = IGNORE_INDEX
    labels[source_ids < 0] = IGNORE_INDEX
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "source_ids": source_ids}
