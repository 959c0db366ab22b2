"""Reading training text for the tokenizer: sources, lossy-but-counted decoding, weighted mixing.

Files are found and cut into records by the data scheduler's `DataSource` (same formats, same skip
accounting), but a tokenizer wants every byte it can get: a record with one undecodable byte is kept
with U+FFFD in its place and the byte is counted, where the pretraining reader drops the record.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from ..data.sources import DataSource, SkipCounter, iter_raw_records

logger = logging.getLogger(__name__)

_REPLACE_HANDLER = "wonton_hf.tokenization.count_replace"
_replaced_bytes = 0


def _count_and_replace(error: UnicodeDecodeError) -> tuple[str, int]:
    global _replaced_bytes
    _replaced_bytes += error.end - error.start
    return "\ufffd", error.end


codecs.register_error(_REPLACE_HANDLER, _count_and_replace)


@dataclass
class CorpusStats:
    """What was read, per source, so a run can say what its vocabulary was learnt from."""

    documents: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    replaced_bytes: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, source: str, text: str, replaced: int = 0) -> str:
        """Counts one document; returns it with lone surrogates (from JSON `\\udc80` escapes) replaced and counted."""
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            replaced += sum(0xD800 <= ord(c) <= 0xDFFF for c in text)
            text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
            size = len(text.encode("utf-8"))
        self.documents[source] = self.documents.get(source, 0) + 1
        self.bytes[source] = self.bytes.get(source, 0) + size
        if replaced:
            self.replaced_bytes[source] = self.replaced_bytes.get(source, 0) + replaced
        return text

    @property
    def total_documents(self) -> int:
        return sum(self.documents.values())


def parse_inputs(inputs: Sequence[str | os.PathLike | DataSource], text_field: str = "text") -> list[DataSource]:
    """`NAME=PATH_OR_GLOB` or `PATH_OR_GLOB` (named after the file) -> resolved `DataSource`s.

    Entries with the same name are one source (several globs for one language). Everything is resolved
    here, so a missing file or unknown extension fails before any reading starts.
    """
    if not inputs:
        raise ValueError(
            "tokenizer training: `inputs` is empty; give at least one file or glob (.txt, .jsonl, .jsonl.gz)."
        )
    grouped: dict[str, list[str]] = {}
    sources: list[DataSource] = []
    for entry in inputs:
        if isinstance(entry, DataSource):
            sources.append(entry)
            continue
        text = os.fspath(entry)
        name, sep, path = text.partition("=")
        if not sep or os.sep in name or not name:
            name, path = _default_name(text), text
        grouped.setdefault(name, []).append(path)
    sources += [DataSource(name=name, paths=paths, text_field=text_field) for name, paths in grouped.items()]
    for source in sources:
        source.resolve()
    return sources


def _default_name(path: str) -> str:
    base = os.path.basename(path)
    for ext in (".gz", ".zst", ".jsonl", ".json", ".txt", ".parquet"):
        base = base.removesuffix(ext)
    return base or path


def iter_source_texts(source: DataSource, stats: CorpusStats, limit: int | None = None) -> Iterator[str]:
    """Texts of one source in file order (at most `limit`); undecodable bytes become U+FFFD and are counted.

    The skips are counted into `stats.skipped[source.name]` by the reader itself, so the trainer's report and
    the reader's log always agree.
    """
    global _replaced_bytes
    if limit is not None and limit <= 0:
        return
    skips = SkipCounter(source.name, stats.skipped.get(source.name))
    stats.skipped[source.name] = skips.counts  # the live dict: right even when a weighted mix stops mid-file
    for path in source.files:
        fmt = source.format_of(path)
        for line_no, raw in enumerate(iter_raw_records(path, fmt, source.txt_unit, skips)):
            _replaced_bytes = 0
            text = _record_text(raw, fmt, source, skips, path, line_no)
            if text:
                yield stats.add(source.name, text, _replaced_bytes)
                if limit is not None and stats.documents[source.name] >= limit:
                    return


def _record_text(raw: object, fmt: str, source: DataSource, skips: SkipCounter, path: str, line: int) -> str | None:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", _REPLACE_HANDLER)
    if fmt == "txt":
        return raw  # the newline stays: `\n` is a token of its own and must be counted
    if isinstance(raw, str):
        if not raw.strip():
            return None
        try:
            raw = json.loads(raw)
        except ValueError as err:
            skips.skip("malformed_json", path, line, str(err)[:80])
            return None
    value: object = raw
    if source.normaliser is not None:  # the scheduler's record -> text callable (code, chat records...)
        try:
            value = source.normaliser(raw)
        except Exception as err:  # one bad record is a counted skip, as in the data scheduler
            skips.skip("normaliser_error", path, line, repr(err)[:80])
            return None
        if value is None:
            skips.skip("normaliser_skipped", path, line)
            return None
    else:
        for key in source.text_field.split("."):
            value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, str):
        skips.skip("missing_text_field" if value is None else "non_string_text", path, line)
        return None
    return value


def mix_texts(
    sources: Sequence[DataSource],
    stats: CorpusStats,
    weights: Mapping[str, float] | None = None,
    limit: int | None = None,
) -> Iterator[str]:
    """One stream of texts; with `weights`, each source's share of the *bytes* follows its weight.

    Without weights every source is read completely (natural proportions). With weights the stream picks,
    for each next document, the source furthest below its target share (deficit accounting, deterministic),
    and stops when that source runs out: larger sources are read only as far as their share needs, so an
    80%-English corpus still yields an even vocabulary, and nothing is ever repeated or held in memory.
    """
    if not weights:
        for source in sources:
            yield from iter_source_texts(source, stats, limit)
        return
    shares = normalised_weights(sources, weights)
    streams = {s.name: iter_source_texts(s, stats, limit) for s in sources if shares[s.name] > 0}
    emitted = dict.fromkeys(streams, 0)
    while True:
        total = sum(emitted.values())
        name = max(streams, key=lambda n: shares[n] * total - emitted[n])
        text = next(streams[name], None)
        if text is None:
            logger.info("tokenizer corpus: source %s is exhausted; stopping the weighted mix here", name)
            return
        emitted[name] += len(text.encode("utf-8"))
        yield text


def normalised_weights(sources: Sequence[DataSource], weights: Mapping[str, float]) -> dict[str, float]:
    names = {s.name for s in sources}
    unknown = sorted(set(weights) - names)
    if unknown:
        raise ValueError(f"tokenizer training: `weights` names unknown sources {unknown}; sources are {sorted(names)}.")
    missing = sorted(names - set(weights))
    if missing:
        raise ValueError(f"tokenizer training: `weights` gives no weight for sources {missing}; give every source one.")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"tokenizer training: `weights` must be >= 0 with a positive sum, got {dict(weights)}.")
    total = sum(weights.values())
    return {name: weights[name] / total for name in names}


def batched(texts: Iterable[str], size: int = 256) -> Iterator[list[str]]:
    """Lists of texts: the `tokenizers` trainer pre-tokenizes each list in one call from Python."""
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["CorpusStats", "batched", "iter_source_texts", "mix_texts", "normalised_weights", "parse_inputs"]
