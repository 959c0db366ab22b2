"""Shuffle blocks too big for memory wait on local disk (disk spilling).

A block is the shuffle buffer, so all its records must be at hand before the first is used. For long documents
(1,024 books of a few MB each) that is gigabytes per source and shard; their raw bytes go to an unlinked temp
file instead and are read back one at a time, in permutation order, so memory holds only their offsets.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections.abc import Callable, Iterator
from itertools import chain, islice
from typing import Any


def read_block(
    records: Iterator[Any], size: int, max_bytes: int, keep: Callable[[int], bool] | None = None
) -> list[Any] | SpilledRecords:
    """The next `size` raw records (those `keep` rejects as None); once the kept ones pass `max_bytes`, the block
    goes to an unlinked temp file instead. (Parquet rows are dicts, not bytes, and stay in memory.)"""
    held: list[Any] = []
    total = 0
    for index, record in enumerate(islice(records, size)):
        if keep is not None and not keep(index):
            record = None
        held.append(record)
        if not isinstance(record, bytes):
            continue
        total += len(record)
        if total > max_bytes and all(isinstance(r, bytes | None) for r in held):
            rest = islice(records, size - len(held))
            if keep is not None:
                rest = (r if keep(i) else None for i, r in enumerate(rest, len(held)))
            return SpilledRecords(chain(held, rest))
    return held


class SpilledRecords:
    """Raw records in an unlinked temp file; only their offsets (16 bytes a record) stay in memory."""

    def __init__(self, records: Iterator[bytes | None]) -> None:
        self._file = tempfile.TemporaryFile(prefix="wonton_block_")
        self._offsets, self._lengths = array("q"), array("q")
        position = 0
        for record in records:
            self._offsets.append(position)
            self._lengths.append(-1 if record is None else len(record))
            if record is not None:
                self._file.write(record)
                position += len(record)
        self._file.flush()

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, index: int) -> bytes | None:
        length = self._lengths[index]
        return None if length < 0 else os.pread(self._file.fileno(), length, self._offsets[index])

    def __setitem__(self, index: int, value: Any) -> None:
        """Releasing a record (the stream drops each once normalised) frees nothing here: it is on disk."""


__all__ = ["SpilledRecords", "read_block"]
