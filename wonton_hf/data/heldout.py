"""Held-out documents: which ones the training stream never yields, and the fixed evaluation windows built from them.

The split is a pure function of a document's *text* (`held_out_key`): a keyed BLAKE2b hash of its UTF-8 bytes,
read as a number in [0, 1), below `held_out_share` means held out. It does not look at the file, the line, the
shard, the rank, the DataLoader worker, the epoch or any resume position, so every layout (one process, DDP,
DeepSpeed, any worker count, before and after an elastic resume) agrees on it, and the same text appearing twice
(in one source or in two) is held out everywhere or nowhere, which keeps duplicates from leaking into the test set.
The stream applies it right after a record is normalised (`stream.SourceStream`), before tokenizing: a held-out
document costs one hash and is neither counted as a skip nor as a document. The share is part of the scheduler's
resume state, so a resume cannot silently change which documents are held out.

The evaluation windows (`build_eval_windows`) read a source's files in their sorted order, keep the held-out
documents, tokenize them exactly as the stream does (same text pieces, BOS/EOS) and pack them with the training
packer (`packing.fill_window`: full windows, `position_ids` restarting per document, the first label of every
segment -100). For bits per byte each token is credited with the UTF-8 bytes of the text it covers (from the
tokenizer's character offsets), so a window knows the bytes of exactly the tokens whose loss is scored.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .packing import fill_window
from .settings import SchedulerSettings
from .sources import DataSource, SkipCounter, iter_raw_records, normalise_record

logger = logging.getLogger(__name__)

HELD_OUT_KEY = b"wonton-held-out-v1"
"""The hash key: changing it changes every run's split, so it is a constant, not a setting."""
_SCALE = float(2**64)


def held_out_key(text: str) -> float:
    """The document's place in [0, 1): uniform over texts, the same in every process and run."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=HELD_OUT_KEY).digest()
    return int.from_bytes(digest, "big") / _SCALE


def is_held_out(text: str, share: float) -> bool:
    """Whether the training stream must never yield this document."""
    return share > 0 and held_out_key(text) < share


@dataclass
class EvalWindows:
    """The fixed evaluation windows of one source (or one explicit evaluation source)."""

    name: str
    windows: list[dict[str, np.ndarray]]
    """`input_ids`, `labels`, `position_ids`, `source_ids` like a training window"""
    scored_bytes: list[int]
    """per window, the UTF-8 bytes of the tokens whose loss is scored (label != -100)"""
    documents: int
    """documents read into the windows"""


def iter_documents(source: DataSource) -> Iterator[str]:
    """Every normalised text of a source, files in sorted order, records in file order (no shuffle, no shards)."""
    skips = _QuietSkips(source.name)
    for path in source.resolve():
        fmt = source.format_of(path)
        for line, raw in enumerate(iter_raw_records(path, fmt, source.txt_unit, skips, source)):
            text = normalise_record(raw, source, fmt, skips, path, line)
            if text:
                yield text


def build_eval_windows(
    source: DataSource,
    backend: Any,
    settings: SchedulerSettings,
    *,
    num_windows: int,
    share: float | None,
    source_index: int = 0,
) -> EvalWindows:
    """Up to `num_windows` packed windows of `source`'s held-out documents (`share` None: every document).

    `backend` is a `tokenizers.Tokenizer` (the fast tokenizer's backend); `settings` carries `seq_len` and the
    BOS/EOS/PAD ids the training stream uses.
    """
    queue: deque[tuple[np.ndarray, np.ndarray]] = deque()
    documents = 0
    texts = (t for t in iter_documents(source) if share is None or is_held_out(t, share))

    def refill() -> bool:
        nonlocal documents
        text = next(texts, None)
        if text is None:
            return False
        documents += 1
        queue.append(_tokens_and_bytes(text, backend, settings))
        return True

    taken: list[np.ndarray] = []

    def next_chunk(room: int) -> tuple[int, np.ndarray] | None:
        while not queue:
            if not refill():
                return None
        ids, nbytes = queue[0]
        if len(ids) <= room:
            queue.popleft()
        else:
            queue[0] = (ids[room:], nbytes[room:])
            ids, nbytes = ids[:room], nbytes[:room]
        taken.append(nbytes)
        return source_index, ids

    windows, scored = [], []
    while len(windows) < num_windows:
        taken.clear()
        window = fill_window(settings.seq_len, next_chunk, settings.pad_token_id or 0)
        if window is None:
            break
        nbytes = np.zeros(settings.seq_len, dtype=np.int64)
        flat = np.concatenate(taken) if taken else nbytes[:0]
        nbytes[: len(flat)] = flat
        scored.append(int(nbytes[window.labels != -100].sum()))
        windows.append(
            {
                "input_ids": window.input_ids,
                "labels": window.labels,
                "position_ids": window.position_ids,
                "source_ids": window.source_ids,
            }
        )
    return EvalWindows(source.name, windows, scored, documents)


def _tokens_and_bytes(text: str, backend: Any, settings: SchedulerSettings) -> tuple[np.ndarray, np.ndarray]:
    """A document's token ids as the stream makes them (same pieces, BOS/EOS) and the UTF-8 bytes each covers.

    A token is credited with the bytes from the end of the previous token to its own end (spaces a tokenizer
    leaves out of every offset go to the next token); the piece's tail goes to its last token, so a document's
    bytes add up exactly to its UTF-8 length. BOS/EOS cover 0 bytes.
    """
    from .stream import split_text  # here: the stream imports this module for `is_held_out`

    ids: list[int] = []
    nbytes: list[int] = []
    if settings.bos_token_id is not None:
        ids.append(settings.bos_token_id)
        nbytes.append(0)
    for piece in split_text(text):
        encoding = backend.encode(piece, add_special_tokens=False)
        previous = 0
        piece_bytes: list[int] = []
        for _, end in encoding.offsets:
            end = max(previous, min(end, len(piece)))
            piece_bytes.append(len(piece[previous:end].encode("utf-8", "surrogatepass")))
            previous = end
        if piece_bytes:
            piece_bytes[-1] += len(piece[previous:].encode("utf-8", "surrogatepass"))
        ids.extend(encoding.ids)
        nbytes.extend(piece_bytes)
    ids.append(settings.eos_token_id)
    nbytes.append(0)
    return np.asarray(ids, dtype=np.int64), np.asarray(nbytes, dtype=np.int64)


class _QuietSkips(SkipCounter):
    """Bad records were already reported by the training stream; reading them again for evaluation stays quiet."""

    def skip(self, reason: str, path: str, line: int | None, detail: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1


__all__ = ["EvalWindows", "build_eval_windows", "held_out_key", "is_held_out", "iter_documents"]
