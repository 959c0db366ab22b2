"""The text-piece size and the token budget it implies: numbers the run-config check needs without numpy.

The pipeline tokenizes long texts in pieces of `PIECE_CHARS` characters and holds one piece per tokenizer batch
in flight, so a source's token budget can be no smaller than `min_buffer_tokens`. The scheduler refuses a
smaller budget and the run-config check reports it under `data.buffer_tokens`, both by this one function.
"""

from __future__ import annotations

PIECE_CHARS = 32_768
"""Texts longer than this are tokenized in pieces (a fixed constant: token offsets must not depend on settings)."""


def min_buffer_tokens(read_ahead: int) -> int:
    """The smallest per-source token budget with `read_ahead` batches read ahead (plus the one being packed)."""
    return PIECE_CHARS * (read_ahead + 1)
