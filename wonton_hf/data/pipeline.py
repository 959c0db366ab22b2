"""The per-source pipeline of the paper's Figure 2, for one shard (one rank x DataLoader worker).

collect file names -> seeded shuffle -> split by rank -> read -> seeded shuffle buffer -> split by worker
-> normalise -> tokenize (batched, fast).

The unit that is split and shuffled is a *block*: `block_size` consecutive records of one file. The shuffle
buffer is a seeded permutation of one block, so where a shard stands is five integers, the *frontier*
`(epoch, file, block, record, token)`: everything the shard owns before it has been emitted, the `record`-th
entry of the block's permutation has been emitted up to `token`. Resuming recomputes the permutation and
re-reads only the block in progress; nothing is replayed. Splitting by rank and by worker is one split
over `num_shards = world_size * num_workers` shards (`shard = rank * num_workers + worker`): whole files
when there are at least as many files as shards (a shard opens only its own files), otherwise blocks of a
file round-robin (each shard reads the file but parses and tokenizes only its blocks).

Changing the number of shards (2 ranks -> 1, or 1 -> 3) keeps the old frontiers as *history*: a block is
consumed up to where its owner under that old layout had got, and the new owner continues it from there,
so no record is lost or repeated.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from itertools import islice
from typing import Any

from .sources import DataSource, SkipCounter, iter_raw_records, normalise_record

Submit = Callable[[list[str]], "Future[list[Any]] | list[Any]"]
"""Starts tokenizing a block: a Future (tokenizer thread) or the result itself (no prefetch); one `tokenizers`
`Encoding` (anything with `.ids`) per text."""


def new_frontier(epoch: int = 0) -> dict[str, Any]:
    return {"epoch": epoch, "file": 0, "block": 0, "record": 0, "token": 0, "done": False}


def owner(num_shards: int, num_files: int, file_pos: int, block: int) -> int:
    """The shard that owns a block under a layout: whole files if there are enough, else blocks round-robin."""
    if num_files >= num_shards:
        return file_pos % num_shards
    return (file_pos + block) % num_shards


def _key(frontier: dict[str, Any]) -> tuple[int, int, int]:
    return frontier["epoch"], frontier["file"], frontier["block"]


class History:
    """Frontiers of earlier layouts (before a change of world size or worker count)."""

    def __init__(self, entries: list[dict[str, Any]], num_files: int) -> None:
        self.entries = entries
        self.num_files = num_files

    def min_epoch(self) -> int:
        """Where a new layout starts: every shard of the latest old layout had finished the epochs before."""
        return min((f["epoch"] for f in self.entries[-1]["frontiers"]), default=0) if self.entries else 0

    def max_epoch(self) -> int:
        return max((f["epoch"] for e in self.entries for f in e["frontiers"]), default=-1)

    def consumed(self, epoch: int, file_pos: int, block: int) -> tuple[int, int] | None:
        """How much of a block's permutation earlier layouts emitted: None, or (records, tokens); records=-1 is all."""
        best: tuple[int, int] | None = None
        for entry in self.entries:
            frontier = entry["frontiers"][owner(entry["num_shards"], self.num_files, file_pos, block)]
            key = (epoch, file_pos, block)
            if frontier["done"] and epoch <= frontier["epoch"] or key < _key(frontier):
                return (-1, 0)
            if key == _key(frontier) and (frontier["record"], frontier["token"]) > (0, 0):
                best = max(best or (0, 0), (frontier["record"], frontier["token"]))
        return best

    def file_consumed(self, epoch: int, file_pos: int) -> bool:
        """True when one earlier layout provably emitted the whole file (so it need not be opened)."""
        for entry in self.entries:
            shards = entry["num_shards"]
            owners = [file_pos % shards] if self.num_files >= shards else range(shards)
            if all(
                (entry["frontiers"][s]["done"] and epoch <= entry["frontiers"][s]["epoch"])
                or (epoch, file_pos) < (entry["frontiers"][s]["epoch"], entry["frontiers"][s]["file"])
                for s in owners
            ):
                return True
        return False


class SourceStream:
    """Documents (token ids + EOS) of one source for one shard, with an exact frontier."""

    def __init__(
        self,
        source: DataSource,
        seed: int,
        shard: int,
        num_shards: int,
        block_size: int,
        submit: Submit,
        eos_id: int,
        frontier: dict[str, Any] | None = None,
        history: list[dict[str, Any]] | None = None,
        skips: dict[str, int] | None = None,
        bos_id: int | None = None,
        prefetch: int = 1,
    ) -> None:
        self.source = source
        self.files = source.files
        self.seed = seed
        self.shard = shard
        self.num_shards = num_shards
        self.block_size = block_size
        self.submit = submit
        self.eos_id = eos_id
        self.bos_id = bos_id
        self.prefetch = prefetch
        """Blocks read and tokenizing ahead of the one being consumed."""
        self.history = History(history or [], len(self.files))
        self.frontier = dict(frontier or new_frontier(self.history.min_epoch()))
        self.skips = SkipCounter(source.name, skips)
        self._docs: Iterator[tuple[dict[str, Any], list[int]]] | None = None
        self._doc: list[int] | None = None
        self._offset = 0

    # ---- consumption (called by the packer) ----

    @property
    def exhausted(self) -> bool:
        return bool(self.frontier["done"])

    def take(self, n: int) -> tuple[list[int], bool] | None:
        """Up to `n` tokens of the current document and whether it ended; None once the source is exhausted."""
        if self._doc is None and not self._next_doc():
            return None
        chunk = self._doc[self._offset : self._offset + n]
        self._offset += len(chunk)
        self.frontier["token"] = self._offset
        if self._offset < len(self._doc):
            return chunk, False
        self._doc = None
        self.frontier["record"] += 1
        self.frontier["token"] = 0
        return chunk, True

    def _next_doc(self) -> bool:
        if self._docs is None:
            self._docs = self._iter_docs()
        item = next(self._docs, None)
        if item is None:
            self.frontier["done"] = True
            return False
        position, ids = item
        self.frontier.update(position)
        self._doc, self._offset = ids, position["token"]
        return True

    # ---- production ----

    def _iter_docs(self) -> Iterator[tuple[dict[str, Any], list[int]]]:
        """Documents in stream order; the next `prefetch` blocks are read and sent to the tokenizer ahead.

        Tokenization is most of the pipeline's work and runs in Rust without the GIL, so while this thread packs
        the current block, the tokenizer thread already encodes the next one. Everything that changes what
        a snapshot says (frontier, skip counts) is applied only when the consumer reaches the item, in order.
        """
        items = self._prepared()
        ahead: deque[_Prepared] = deque()

        def pull() -> bool:
            item = next(items, None)
            if item is None:
                return False
            if item.block is not None:
                item.tokens = self.submit(item.block.texts)
            ahead.append(item)
            return True

        while ahead or pull():
            item = ahead.popleft()
            while sum(queued.block is not None for queued in ahead) < self.prefetch and pull():
                pass
            self.skips.replay(item.skips)
            if item.new_epoch is not None:
                self.frontier.update(new_frontier(item.new_epoch))
            if item.block is not None:
                yield from self._block_docs(item.block, _result(item.tokens))

    def _prepared(self) -> Iterator[_Prepared]:
        """Walks the shard's blocks from the frontier over epochs; stops per the exhaustion policy."""
        start = dict(self.frontier)
        epoch = start["epoch"]
        pending = _DeferredSkips()
        while True:
            produced = 0
            for block in self._epoch_blocks(epoch, start if epoch == start["epoch"] else None, pending):
                produced += 1
                yield _Prepared(pending.take(), block=block)
            if self.source.exhaustion == "stop" or (produced == 0 and epoch > self.history.max_epoch()):
                # `stop`, or a whole epoch without one document (too few records for this many shards, or all
                # bad): repeating would spin forever, so this shard treats the source as exhausted.
                yield _Prepared(pending.take())
                return
            epoch += 1
            yield _Prepared(pending.take(), new_epoch=epoch)

    def file_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.files)))
        random.Random(f"{self.seed}/{self.source.name}/files/{epoch}").shuffle(order)
        return order

    def _epoch_blocks(self, epoch: int, start: dict[str, Any] | None, skips: _DeferredSkips) -> Iterator[_Block]:
        order = self.file_order(epoch)
        first_file = start["file"] if start else 0
        for file_pos in range(first_file, len(order)):
            if len(self.files) >= self.num_shards and file_pos % self.num_shards != self.shard:
                continue
            if self.history.file_consumed(epoch, file_pos):
                continue
            resume = start if start and file_pos == start["file"] else None
            yield from self._file_blocks(epoch, file_pos, self.files[order[file_pos]], resume, skips)

    def _file_blocks(
        self, epoch: int, file_pos: int, path: str, resume: dict[str, Any] | None, skips: _DeferredSkips
    ) -> Iterator[_Block]:
        fmt = self.source.format_of(path)
        records = iter_raw_records(path, fmt, self.source.txt_unit, skips)
        first_block = resume["block"] if resume else 0
        block = 0
        while True:
            raw = list(islice(records, self.block_size))
            if not raw:
                return
            mine = owner(self.num_shards, len(self.files), file_pos, block) == self.shard
            if mine and block >= first_block:
                done = self.history.consumed(epoch, file_pos, block)
                begin = (resume["record"], resume["token"]) if resume and block == first_block else (0, 0)
                if done != (-1, 0):
                    begin = max(begin, done or (0, 0))
                    yield self._normalised_block(epoch, file_pos, block, path, fmt, raw, begin, skips)
            block += 1

    def _normalised_block(
        self,
        epoch: int,
        file_pos: int,
        block: int,
        path: str,
        fmt: str,
        raw: list[Any],
        begin: tuple[int, int],
        skips: _DeferredSkips,
    ) -> _Block:
        perm = list(range(len(raw)))
        random.Random(f"{self.seed}/{self.source.name}/block/{epoch}/{path}/{block}").shuffle(perm)
        first_line = block * self.block_size
        positions, texts = [], []
        for q in range(begin[0], len(perm)):
            text = normalise_record(raw[perm[q]], self.source, fmt, skips, path, first_line + perm[q])
            if text is not None:
                positions.append(q)
                texts.append(text)
        return _Block(epoch, file_pos, block, begin, positions, texts)

    def _block_docs(self, block: _Block, encodings: list[Any]) -> Iterator[tuple[dict[str, Any], list[int]]]:
        begin = block.begin
        for q, encoding in zip(block.positions, encodings, strict=True):
            ids = encoding.ids
            token = begin[1] if q == begin[0] else 0
            if self.bos_id is not None:
                ids.insert(0, self.bos_id)
            ids.append(self.eos_id)
            if token >= len(ids):
                continue
            yield {"epoch": block.epoch, "file": block.file, "block": block.block, "record": q, "token": token}, ids


@dataclass
class _Block:
    """The owned records of one block, normalised, in shuffled order, waiting for (or past) tokenization."""

    epoch: int
    file: int
    block: int
    begin: tuple[int, int]
    positions: list[int]
    texts: list[str]


@dataclass
class _Prepared:
    """One step of a source's stream: skips to count, maybe a new epoch, maybe a block (with its token ids)."""

    skips: list[tuple[Any, ...]]
    block: _Block | None = None
    new_epoch: int | None = None
    tokens: Future | list[Any] | None = None


class _DeferredSkips:
    """Collects skips met while reading ahead; `SkipCounter.replay` counts them when the stream gets there.

    Counting them at read time would put skips of a prefetched block into a snapshot taken before it, and a
    resume from that snapshot would count them a second time.
    """

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def skip(self, reason: str, path: str, line: int | None, detail: str = "") -> None:
        self.events.append((reason, path, line, detail))

    def take(self) -> list[tuple[Any, ...]]:
        events, self.events = self.events, []
        return events


def _result(tokens: Future | list[Any] | None) -> list[Any]:
    return tokens.result() if isinstance(tokens, Future) else tokens or []
