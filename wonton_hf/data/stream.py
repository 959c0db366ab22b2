"""The token stream of one source for one shard (one rank x DataLoader worker): the per-source pipeline of the
paper's Figure 2.

collect file names -> seeded shuffle -> split by rank -> read -> seeded shuffle buffer -> split by worker
-> normalise -> tokenize (batched, fast).

The unit that is split and shuffled is a *block*: `block_size` consecutive records of one file. The shuffle
buffer is a seeded permutation of one block; its records are normalised and tokenized lazily, in permutation
order, a batch of a bounded number of characters at a time (see `SourceStream`), so what a shard holds ahead of
the packer is bounded by tokens, not by records; a block whose raw records are too big to hold (long documents)
waits on local disk (`spill`). Which records a shard owns, and what its frontier and the history of earlier
layouts mean, are the rules of `layout`. Resuming recomputes the permutation and re-reads only the block in
progress; nothing is replayed.
"""

from __future__ import annotations

import random
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from .heldout import is_held_out
from .layout import History, new_frontier, owner, readers
from .settings import PIECE_CHARS, SchedulerSettings
from .sources import DataSource, SkipCounter, iter_raw_records, normalise_record
from .spill import SpilledRecords, read_block

Submit = Callable[[Callable[[], Any]], Any]
"""Runs a tokenizing job: returns a Future (tokenizer thread) or the job's result itself (no read-ahead)."""
Encode = Callable[[list[str]], list[Any]]
"""Batched encoding: one `tokenizers` `Encoding` (anything with `.ids`) per text."""

FIRST_BATCH_CHARS = 8_192
"""Characters in a stream's first tokenizer batch; batches double from there up to `batch_chars`."""
BLOCK_BYTES_PER_TOKEN = 8
"""Raw bytes of the current block held in memory per token of the budget (2 MiB at the default budget)."""


class SourceStream:
    """Documents (token ids + EOS) of one source for one shard, with an exact frontier.

    What the stream holds ahead of the packer is bounded by tokens, not records: the records of the block in
    progress are normalised and tokenized lazily, in the order the block's permutation consumes them, in
    batches of at most `batch_chars` characters, and at most `prefetch_blocks` batches are tokenizing or waiting
    beyond the one being packed. Token ids are kept as int32 arrays (4 bytes a token); the tokenizer's
    `Encoding` objects (about 80 bytes a token) live only inside one batch's encode call. A text longer than
    `PIECE_CHARS` is tokenized in pieces cut at whitespace, so a book streams through in bounded memory; the
    cut points depend on the text only, so token offsets (and resume positions) are the same in every run.
    """

    def __init__(
        self,
        source: DataSource,
        settings: SchedulerSettings,
        shard: int,
        num_shards: int,
        submit: Submit,
        encode: Encode,
        *,
        frontier: dict[str, Any] | None = None,
        history: list[dict[str, Any]] | None = None,
        skips: dict[str, int] | None = None,
    ) -> None:
        self.source = source
        self.files = source.files
        self.settings = settings
        """Read for the seed, block size, token ids and budget; `eos_token_id` is filled in (the scheduler's)."""
        self.shard = shard
        self.num_shards = num_shards
        self.submit = submit
        self.encode = encode
        self.batch_chars = batch_chars(settings.buffer_tokens, settings.prefetch_blocks)
        self.max_block_bytes = BLOCK_BYTES_PER_TOKEN * settings.buffer_tokens
        """Raw bytes of a block held in memory; a larger block waits in a temp file (`spill.read_block`)."""
        self.history = History(history or [], len(self.files), settings.block_size)
        self.frontier = dict(frontier or new_frontier(self.history.min_epoch()))
        self.skips = SkipCounter(source.name, skips)
        self._pieces: Iterator[_Piece] | None = None
        self._ahead: deque[_Batch] = deque()
        self._packing: np.ndarray | None = None
        self._tokens_per_char = 1.0
        """The most tokens per character seen in a batch (above 1 for byte-level BPE on scripts it knows little
        of): batches shrink by it, so the budget holds in tokens, not only in characters."""
        self._piece: np.ndarray | None = None
        self._last = False
        self._offset = 0
        self._piece_start = 0
        self._doc_tokens = 0

    # ---- consumption (called by the packer) ----

    @property
    def exhausted(self) -> bool:
        return bool(self.frontier["done"])

    def take(self, n: int) -> tuple[np.ndarray, bool] | None:
        """Up to `n` tokens of the current document and whether it ended; None once the source is exhausted."""
        if self._piece is None and not self._next_piece():
            return None
        parts = []
        while True:
            chunk = self._piece[self._offset : self._offset + n]
            parts.append(chunk)
            n -= len(chunk)
            self._offset += len(chunk)
            self.frontier["token"] = self._piece_start + self._offset
            if self._offset < len(self._piece):
                break
            self._piece = None
            if self._last:
                self.frontier["record"] += 1
                self.frontier["token"] = 0
                return _joined(parts), True
            if n == 0 or not self._next_piece():
                break
        return _joined(parts), False

    def _next_piece(self) -> bool:
        """Moves to the next piece to emit (the next document, or the next piece of the current one)."""
        if self._pieces is None:
            self._pieces = self._iter_pieces()
        for piece in self._pieces:
            ids = piece.ids
            if piece.first:
                self._doc_tokens = 0
            start = max(0, piece.resume_token - self._doc_tokens)
            self._piece_start = self._doc_tokens
            self._doc_tokens += len(ids)
            if start >= len(ids):  # emitted before the snapshot this stream resumed from
                continue
            self.frontier.update(piece.position)
            self.frontier["token"] = self._piece_start + start
            self._piece, self._offset, self._last = ids, start, piece.last
            return True
        self.frontier["done"] = True
        return False

    # ---- production ----

    def _iter_pieces(self) -> Iterator[_Piece]:
        """Pieces in stream order; the next `prefetch_blocks` batches are read and sent to the tokenizer ahead.

        Tokenization is most of the pipeline's work and runs in Rust without the GIL, so while this thread packs
        the current batch, the tokenizer thread already encodes the next ones. Everything that changes what
        a snapshot says (frontier, skip counts) is applied only when the consumer reaches the item, in order.
        """
        batches = self._batches()
        ahead = self._ahead
        read_ahead = self.settings.prefetch_blocks

        def pull() -> bool:
            batch = next(batches, None)
            if batch is None:
                return False
            if batch.texts:
                texts, flags = batch.texts, batch.flags
                batch.texts = batch.flags = []  # the text is dropped once its tokens exist
                batch.tokens = self.submit(lambda: self._encode_batch(texts, flags))
            ahead.append(batch)
            return True

        while ahead or pull():
            batch = ahead.popleft()
            while sum(queued.tokens is not None for queued in ahead) < read_ahead and pull():
                pass
            self.skips.replay(batch.prelude)
            if batch.new_epoch is not None:
                self.frontier.update(new_frontier(batch.new_epoch))
            if batch.block is not None:
                yield from self._batch_pieces(batch)

    def _encode_batch(self, texts: list[str], flags: list[tuple[bool, bool]]) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> one flat int32 array (BOS/EOS where a document starts/ends) and the length of each text's part.

        Runs in the tokenizer thread: the `Encoding`s are converted and freed here, one batch at a time.
        """
        ids = [encoding.ids for encoding in self.encode(texts)]
        bos_id, eos_id = self.settings.bos_token_id, self.settings.eos_token_id
        bos = bos_id is not None
        lengths = np.fromiter(
            (len(x) + (bos and first) + last for x, (first, last) in zip(ids, flags, strict=True)),
            dtype=np.int64,
            count=len(ids),
        )
        flat = np.empty(int(lengths.sum()), dtype=np.int32)
        pos = 0
        for x, (first, last) in zip(ids, flags, strict=True):
            if bos and first:
                flat[pos] = bos_id
                pos += 1
            flat[pos : pos + len(x)] = x
            pos += len(x)
            if last:
                flat[pos] = eos_id
                pos += 1
        return flat, lengths

    def held_tokens(self) -> int:
        """Token ids this stream holds now: the batch being packed and the tokenized batches ahead of it."""
        held = 0 if self._packing is None else len(self._packing)
        for batch in self._ahead:
            tokens = batch.tokens
            if isinstance(tokens, Future):
                tokens = tokens.result() if tokens.done() else None
            held += 0 if tokens is None else len(tokens[0])
        return held

    def _batch_pieces(self, batch: _Batch) -> Iterator[_Piece]:
        flat, lengths = _result(batch.tokens)
        batch.tokens = None
        self._packing = flat
        if batch.chars:
            self._tokens_per_char = max(self._tokens_per_char, len(flat) / batch.chars)
        block = batch.block
        ends = np.cumsum(lengths).tolist()
        skipped = iter(batch.skipped)
        pending = next(skipped, None)
        start = 0
        for (q, first, last), end in zip(batch.items, ends, strict=True):
            while pending is not None and pending[0] < q:  # skips are counted when the stream passes them
                self.skips.replay(pending[1])
                pending = next(skipped, None)
            resume = block.partial.get(q, 0)
            position = {"epoch": block.epoch, "file": block.file, "block": block.block, "record": q}
            yield _Piece(position, flat[start:end], first, last, resume)
            start = end
        while pending is not None:
            self.skips.replay(pending[1])
            pending = next(skipped, None)

    def _batches(self) -> Iterator[_Batch]:
        """Normalises the owned records in permutation order and groups their texts (or pieces) into batches.

        The first batches are small and grow to `batch_chars`, so the first window waits for little tokenizing.
        """
        limit = min(FIRST_BATCH_CHARS, self.batch_chars)
        held_out_share = self.settings.held_out_share
        for item in self._prepared():
            if item.block is None:
                yield _Batch(item.skips, new_epoch=item.new_epoch)
                continue
            block = item.block
            batch = _Batch(item.skips, block=block)
            for q in block.todo:
                events = _DeferredSkips()
                line = block.first_line + block.perm[q]
                text = normalise_record(block.take_raw(q), self.source, block.fmt, events, block.path, line)
                if events.events:
                    batch.skipped.append((q, events.events))
                if text is None or (held_out_share and is_held_out(text, held_out_share)):
                    continue  # a held-out document is neither trained on nor counted (heldout.py)
                pieces = split_text(text)
                for k, piece in enumerate(pieces):
                    if batch.chars and batch.chars + len(piece) > limit:
                        yield batch
                        limit = min(2 * limit, max(PIECE_CHARS, int(self.batch_chars / self._tokens_per_char)))
                        batch = _Batch([], block=block)
                    batch.add(q, piece, k == 0, k == len(pieces) - 1)
            yield batch

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
        random.Random(f"{self.settings.seed}/{self.source.name}/files/{epoch}").shuffle(order)
        return order

    def _epoch_blocks(self, epoch: int, start: dict[str, Any] | None, skips: _DeferredSkips) -> Iterator[_Block]:
        order = self.file_order(epoch)
        first_file = start["file"] if start else 0
        for file_pos in range(first_file, len(order)):
            if self.shard not in readers(self.num_shards, len(self.files), file_pos):
                continue
            if self.history.file_consumed(epoch, file_pos):
                continue
            resume = start if start and file_pos == start["file"] else None
            yield from self._file_blocks(epoch, file_pos, self.files[order[file_pos]], resume, skips)

    def _file_blocks(
        self, epoch: int, file_pos: int, path: str, resume: dict[str, Any] | None, skips: _DeferredSkips
    ) -> Iterator[_Block]:
        fmt = self.source.format_of(path)
        records = iter_raw_records(path, fmt, self.source.txt_unit, skips, self.source)
        first_block = resume["block"] if resume else 0
        size = self.settings.block_size
        whole_file = len(self.files) >= self.num_shards  # else every block is split by records
        block = 0
        while True:
            if block < first_block or self.history.block_consumed(epoch, file_pos, block):
                # emitted before (by this shard, or by an earlier layout): read past it without keeping it
                if sum(1 for _ in islice(records, size)) == 0:
                    return
                block += 1
                continue
            mine = None if whole_file else self._owns(file_pos, block)
            raw = read_block(records, size, self.max_block_bytes, mine)
            if not len(raw):
                return
            perm = list(range(len(raw)))
            random.Random(f"{self.settings.seed}/{self.source.name}/block/{epoch}/{path}/{block}").shuffle(perm)
            begin, begin_token = (resume["record"], resume["token"]) if resume and block == first_block else (0, 0)
            for q in range(begin):  # emitted before the resume
                raw[perm[q]] = None
            todo, partial = [], {}
            for q in range(begin, len(perm)):
                index = perm[q]
                if mine is not None and not mine(index):
                    continue
                done = self.history.emitted(epoch, file_pos, block, q, index) if self.history.entries else 0
                if done == -1:
                    raw[index] = None
                    continue
                if q == begin:
                    done = max(done, begin_token)
                if done:
                    partial[q] = done
                todo.append(q)
            if todo:
                yield _Block(epoch, file_pos, block, todo, partial, path, fmt, block * size, perm, raw)
            block += 1

    def _owns(self, file_pos: int, block: int) -> Callable[[int], bool]:
        n, shard, num_files, size = self.num_shards, self.shard, len(self.files), self.settings.block_size
        return lambda index: owner(n, num_files, file_pos, block, index, size) == shard


def batch_chars(buffer_tokens: int, read_ahead: int) -> int:
    """Characters per tokenizer batch, so that the batches held (`read_ahead` + the one packed) fit the budget.

    Without read-ahead a batch is encoded while the consumer waits, so a big one only makes a long stall (and
    a DataLoader, which takes batches from its workers in turn, leaves the other workers idle meanwhile): such
    batches are one piece long. Measured with the fast BPE on 2 cores (`benchmarks/data_scheduler_throughput.py`,
    no read-ahead): 1 worker 12% faster than with budget-sized batches, 2 workers / 1 worker 1.28x -> 1.8x.
    """
    if read_ahead == 0:
        return PIECE_CHARS
    return max(PIECE_CHARS, buffer_tokens // (read_ahead + 1))


def split_text(text: str) -> list[str]:
    """Pieces of at most `PIECE_CHARS` characters, cut after whitespace where there is some in the last eighth.

    Cut points depend on the text only (not on any setting), so a document's token offsets are the same in
    every run; a cut at whitespace changes the tokenization at most by a merge across it.
    """
    if len(text) <= PIECE_CHARS:
        return [text]
    pieces, start = [], 0
    while len(text) - start > PIECE_CHARS:
        end = start + PIECE_CHARS
        window = text[end - PIECE_CHARS // 8 : end]
        match = _LAST_SPACE.search(window)
        if match is not None:
            end = end - PIECE_CHARS // 8 + match.end()
        pieces.append(text[start:end])
        start = end
    pieces.append(text[start:])
    return pieces


_LAST_SPACE = re.compile(r"\s(?=\S*\Z)")


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


@dataclass
class _Block:
    """A block with records this shard still has to emit: its raw records (other shards' records and those
    emitted before are None) and permutation; records are released as they are normalised."""

    epoch: int
    file: int
    block: int
    todo: list[int]
    """The permutation positions this shard still has to emit, in order."""
    partial: dict[int, int]
    """Tokens already emitted of a record in `todo` (the one a resume stopped in, by this or an earlier layout)."""
    path: str
    fmt: str
    first_line: int
    perm: list[int]
    raw: list[Any] | SpilledRecords

    def take_raw(self, q: int) -> Any:
        index = self.perm[q]
        record, self.raw[index] = self.raw[index], None
        return record


@dataclass
class _Batch:
    """Texts (or pieces of texts) of one block sent to the tokenizer together, with what to count on the way."""

    prelude: list[tuple[Any, ...]]
    """Skips met before this batch (reading files), counted when the stream reaches it."""
    block: _Block | None = None
    new_epoch: int | None = None
    items: list[tuple[int, bool, bool]] = field(default_factory=list)
    """(permutation position, first piece, last piece) per text."""
    texts: list[str] = field(default_factory=list)
    flags: list[tuple[bool, bool]] = field(default_factory=list)
    skipped: list[tuple[int, list[tuple[Any, ...]]]] = field(default_factory=list)
    """Records of this batch's range that normalised to nothing: (position, skip events)."""
    chars: int = 0
    tokens: Future | tuple[np.ndarray, np.ndarray] | None = None

    def add(self, q: int, text: str, first: bool, last: bool) -> None:
        self.items.append((q, first, last))
        self.texts.append(text)
        self.flags.append((first, last))
        self.chars += len(text)


@dataclass
class _Piece:
    position: dict[str, int]
    ids: np.ndarray
    first: bool
    last: bool
    resume_token: int
    """Tokens of this document emitted before the snapshot the stream resumed from (0 if none)."""


@dataclass
class _Prepared:
    """One step of a source's walk: skips to count, maybe a new epoch, maybe a block."""

    skips: list[tuple[Any, ...]]
    block: _Block | None = None
    new_epoch: int | None = None


class _DeferredSkips:
    """Collects skips met while reading ahead; `SkipCounter.replay` counts them when the stream gets there.

    Counting them at read time would put skips of a prefetched batch into a snapshot taken before it, and a
    resume from that snapshot would count them a second time.
    """

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def skip(self, reason: str, path: str, line: int | None, detail: str = "") -> None:
        self.events.append((reason, path, line, detail))

    def take(self) -> list[tuple[Any, ...]]:
        events, self.events = self.events, []
        return events


def _result(tokens: Future | tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(tokens, Future):
        return tokens.result()
    return tokens if tokens is not None else (np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int64))
