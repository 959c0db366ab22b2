"""Which shard owns which record under a layout, and how far earlier layouts got (the shard layout rules).

Splitting by rank and by DataLoader worker is one split over `num_shards = world_size * num_workers` shards
(`shard = rank * num_workers + worker`): whole files when there are at least as many files as shards (a shard
opens only its own files), otherwise record by record among the shards that share a file, each shard sharing at
most two (`owner`, `readers`: it reads those files, but parses and tokenizes only its records). Records, not
blocks, because a source of a few files holds few blocks: 1,100 documents in one file are one full block and a
short one, and split by blocks one of two shards would get 93% of them (and, cycling, repeat the other 7% about
13 times as often); split by records every shard gets its share. At most two files a shard, not all of them: at
4,096 shards a source of 100 files would otherwise be read 4,096 times over, now about 41.

Where a shard stands is its *frontier* `(epoch, file, block, record, token)`: everything the shard owns before
it has been emitted, the `record`-th entry of the block's permutation has been emitted up to `token`. Changing
the number of shards (2 ranks -> 1, or 1 -> 3) keeps the old frontiers as *history*: a record is consumed as far
as its owner under that old layout had got, and its new owner continues from there, so no record is lost or
repeated. These rules are what a saved position means, so changing them changes the state version (`resume`).
"""

from __future__ import annotations

import functools
import math
from typing import Any


def new_frontier(epoch: int = 0) -> dict[str, Any]:
    return {"epoch": epoch, "file": 0, "block": 0, "record": 0, "token": 0, "done": False}


def owner(num_shards: int, num_files: int, file_pos: int, block: int, index: int, block_size: int) -> int:
    """The shard that owns a record (the `index`-th of block `block` in file order) under a layout.

    At least as many files as shards: whole files, round-robin. Fewer: the files are laid end to end on an axis
    of `num_files * num_shards` points, file f on `[f * num_shards, (f + 1) * num_shards)` and shard s on
    `[s * num_files, (s + 1) * num_files)`; the i-th record of a file sits at point `i * stride mod num_shards`
    of the file's span, a stride near the golden ratio of the span, so that even a file of fewer records than
    shards spreads them evenly over it (and every `num_shards` records fill it exactly). Every shard then owns
    the same share of the source (files of equal size) and reads at most two files (`readers`), where split
    record by record over all shards it would read every one. By file order, not permutation order, so a shard
    knows while reading which records it may drop.
    """
    if num_files >= num_shards:
        return file_pos % num_shards
    point = (block * block_size + index) * _stride(num_shards) % num_shards
    return (file_pos * num_shards + point) // num_files


@functools.cache
def _stride(n: int) -> int:
    """The integer nearest n / golden ratio that is coprime to n: `i * stride mod n` visits every point once in n
    steps, and its first k steps are spread evenly over [0, n) for any k (the three-distance theorem)."""
    stride = max(1, round(n * 0.6180339887498949))
    while math.gcd(stride, n) != 1:
        stride += 1
    return stride


def readers(num_shards: int, num_files: int, file_pos: int) -> range:
    """The shards that own records of a file (see `owner`): one, or the ones whose span meets the file's."""
    if num_files >= num_shards:
        return range(file_pos % num_shards, file_pos % num_shards + 1)
    return range(file_pos * num_shards // num_files, ((file_pos + 1) * num_shards - 1) // num_files + 1)


def past(frontier: dict[str, Any], epoch: int, file_pos: int, block: int) -> bool:
    """True when a shard at `frontier` has emitted everything it owns of that block."""
    return bool(frontier["done"] and epoch <= frontier["epoch"]) or (epoch, file_pos, block) < _key(frontier)


def _key(frontier: dict[str, Any]) -> tuple[int, int, int]:
    return frontier["epoch"], frontier["file"], frontier["block"]


class History:
    """Frontiers of earlier layouts (before a change of world size or worker count)."""

    def __init__(self, entries: list[dict[str, Any]], num_files: int, block_size: int) -> None:
        self.entries = entries
        self.num_files = num_files
        self.block_size = block_size

    def min_epoch(self) -> int:
        """Where a new layout starts: every shard of the latest old layout had finished the epochs before."""
        return min((f["epoch"] for f in self.entries[-1]["frontiers"]), default=0) if self.entries else 0

    def max_epoch(self) -> int:
        return max((f["epoch"] for e in self.entries for f in e["frontiers"]), default=-1)

    def emitted(self, epoch: int, file_pos: int, block: int, record: int, index: int) -> int:
        """Tokens earlier layouts emitted of a record (permutation position `record`, file-order `index` in its
        block): 0, some, or -1 for all."""
        best = 0
        for entry in self.entries:
            shard = owner(entry["num_shards"], self.num_files, file_pos, block, index, self.block_size)
            frontier = entry["frontiers"][shard]
            if past(frontier, epoch, file_pos, block):
                return -1
            if (epoch, file_pos, block) == _key(frontier):
                if record < frontier["record"]:
                    return -1
                if record == frontier["record"]:
                    best = max(best, frontier["token"])
        return best

    def block_consumed(self, epoch: int, file_pos: int, block: int) -> bool:
        """True when one earlier layout provably emitted the whole block (so it need not be parsed)."""
        for entry in self.entries:
            owners = readers(entry["num_shards"], self.num_files, file_pos)
            if all(past(entry["frontiers"][s], epoch, file_pos, block) for s in owners):
                return True
        return False

    def file_consumed(self, epoch: int, file_pos: int) -> bool:
        """True when one earlier layout provably emitted the whole file (so it need not be opened)."""
        for entry in self.entries:
            owners = readers(entry["num_shards"], self.num_files, file_pos)
            if all(
                (entry["frontiers"][s]["done"] and epoch <= entry["frontiers"][s]["epoch"])
                or (epoch, file_pos) < (entry["frontiers"][s]["epoch"], entry["frontiers"][s]["file"])
                for s in owners
            ):
                return True
        return False


__all__ = ["History", "new_frontier", "owner", "past", "readers"]
