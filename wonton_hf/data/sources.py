"""Data sources: declaring a corpus, finding its files and reading its records.

A `DataSource` is what a user writes (in Python or YAML). Reading is split in two on purpose:
`iter_raw_records` only cuts a file into raw records (bytes lines, parquet rows), which is cheap and
is what the shard split needs to count positions; `normalise_record` parses one raw record into text
and is only run for the records a shard actually owns. Every record that cannot become text is a
*counted skip* (`SkipCounter`), never an exception that stops training: one bad line in a 100 GB
crawl must not kill a run, but losing data silently must show up in the logs.
"""

from __future__ import annotations

import gzip
import importlib
import io
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .._problems import Problem, raise_problems

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "jsonl.gz", "jsonl.zst", "txt", "parquet")
EXHAUSTION_POLICIES = ("repeat", "stop")
READ_ERROR_POLICIES = ("raise", "skip")
TXT_UNITS = ("line", "file")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".jsonl.gz": "jsonl.gz",
    ".json.gz": "jsonl.gz",
    ".jsonl.zst": "jsonl.zst",
    ".json.zst": "jsonl.zst",
    ".txt": "txt",
    ".parquet": "parquet",
}
MAX_LOGGED_SKIPS = 5
"""How many skipped records per source are logged with file and line; the rest are only counted."""


@dataclass
class DataSource:
    """One corpus of the mixture.

    Files are found by `paths` (local paths, globs or fsspec URLs such as `s3://bucket/x/*.jsonl.zst`),
    sorted, so the file list (and therefore every position stored in a checkpoint) does not depend on
    the listing order of the file system.
    """

    name: str
    """Unique name; it keys the weights, the statistics and the checkpoint state."""
    paths: list[str]
    """Files, globs or fsspec URLs."""
    weight: float = 1.0
    """Unnormalised mixture weight (the scheduler normalises over all sources)."""
    text_field: str = "text"
    """Field holding the text in jsonl/parquet records (dotted for nested fields: `meta.body`)."""
    normaliser: Callable[[Any], str | None] | str | None = None
    """Record -> text (or None to skip), for code files, chat records...; a callable or `module:function`."""
    format: str | None = None
    """One of `FORMATS`; None means "from the file extension"."""
    language: str | None = None
    """Language tag (e.g. `de`), reported with the statistics."""
    exhaustion: str = "repeat"
    """When all files are read: `repeat` (a new epoch with a new shuffle) or `stop` (hand its weight to the others)."""
    txt_unit: str = "line"
    """For txt files: each `line` is a document, or the whole `file` is one document."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for remote paths, e.g. `{endpoint_url: http://..., key: ..., secret: ...}` for an
    S3-compatible store; left empty, credentials and endpoint come from the environment (`AWS_*`)."""
    on_read_error: str = "raise"
    """After `read_retries` failed retries of a transient read error (network, 5xx, dropped connection):
    `raise` stops training with an error naming the file, `skip` counts the rest of the file as skipped
    (`read_error`) and goes on. Errors that retrying cannot fix (missing, truncated, corrupt file) are always
    counted skips."""
    read_retries: int = 5
    """Retries of a transient read error, each reopening the file where the stream stood."""
    retry_backoff: float = 1.0
    """Seconds before the first retry; doubled at each further one (at most 60 s)."""
    files: list[str] = field(default_factory=list, init=False, repr=False)
    _listed: tuple[Any, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.paths, str):
            self.paths = [self.paths]
        raise_problems(f"DataSource `{self.name}`" if self.name else "DataSource", self.problems())
        if isinstance(self.normaliser, str):
            self.normaliser = _import_callable(self.normaliser, self.name)

    def problems(self) -> list[Problem]:
        """What is wrong with the fields (the run-config check reports the same under `data.sources[i]`)."""
        found: list[Problem] = []
        if not self.name or not isinstance(self.name, str):
            found.append(("name", f"must be a non-empty string, got {self.name!r}"))
        if not self.paths:
            found.append(("paths", "is empty; give at least one file, glob or URL"))
        number = (int, float)
        checks = [
            ("weight", isinstance(self.weight, number) and self.weight >= 0, "must be a number >= 0"),
            ("format", self.format is None or self.format in FORMATS, f"unknown `format`; use one of {FORMATS}"),
            ("exhaustion", self.exhaustion in EXHAUSTION_POLICIES, f"must be one of {EXHAUSTION_POLICIES}"),
            ("txt_unit", self.txt_unit in TXT_UNITS, f"must be one of {TXT_UNITS}"),
            ("storage_options", isinstance(self.storage_options, dict), "must be a mapping"),
            ("on_read_error", self.on_read_error in READ_ERROR_POLICIES, f"must be one of {READ_ERROR_POLICIES}"),
            ("read_retries", isinstance(self.read_retries, int) and self.read_retries >= 0, "must be an integer >= 0"),
            (
                "retry_backoff",
                isinstance(self.retry_backoff, number) and self.retry_backoff >= 0,
                "must be a number >= 0",
            ),
        ]
        found += [(name, f"{rule}, got {getattr(self, name)!r}") for name, ok, rule in checks if not ok]
        return found

    def resolve(self) -> list[str]:
        """Expands the globs, once per process (validation and the scheduler share the listing); fails before
        training if nothing matches, the store cannot be listed (endpoint, credentials, bucket) or a format is
        unknown."""
        key = (tuple(self.paths), repr(sorted(self.storage_options.items())))
        if self._listed == key:
            return self.files
        import fsspec  # 0.1 s: not for the run-config check, which imports this module for `DataSource`

        files: list[str] = []
        for pattern in self.paths:
            try:
                fs, path = fsspec.core.url_to_fs(pattern, **self.storage_options)
                has_glob = any(c in path for c in "*?[")
                matches = sorted(fs.glob(path)) if has_glob else ([path] if fs.exists(path) else [])
            except Exception as err:  # botocore/aiohttp/permission errors: one clear message naming the source
                raise OSError(
                    f"DataSource `{self.name}`: cannot list {pattern!r} ({type(err).__name__}: {err}); check the "
                    "endpoint, the credentials (`storage_options` or the AWS_* environment) and the bucket."
                ) from err
            local = fs.protocol in ("file", ("file", "local"))
            files.extend(m if local else fs.unstrip_protocol(m) for m in matches)
        if not files:
            raise FileNotFoundError(
                f"DataSource `{self.name}`: no file matches {self.paths}; check the paths/globs (relative paths are "
                "resolved from the current directory; for object storage, the bucket name and its access)."
            )
        for path in files:
            self.format_of(path)
        self.files = sorted(dict.fromkeys(files))
        self._listed = key
        return self.files

    def format_of(self, path: str) -> str:
        if self.format is not None:
            return self.format
        lowered = path.lower()
        for ext in sorted(_EXTENSIONS, key=len, reverse=True):
            if lowered.endswith(ext):
                return _EXTENSIONS[ext]
        raise ValueError(
            f"DataSource `{self.name}`: cannot tell the format of {path!r} from its extension; set `format` to one of "
            f"{FORMATS}."
        )


def _import_callable(spec: str, source: str) -> Callable[[Any], str | None]:
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"DataSource `{source}`: `normaliser` {spec!r} is not importable as `module:function` ({err})."
        ) from err


def load_sources(spec: str | list[dict[str, Any]] | dict[str, Any]) -> list[DataSource]:
    """Sources from a YAML file path, a YAML string, or already-parsed dicts (`sources:` list or a bare list)."""
    import fsspec
    import yaml

    if isinstance(spec, str):
        if "\n" not in spec and fsspec.core.url_to_fs(spec)[0].exists(spec):
            with fsspec.open(spec, "r") as f:
                spec = yaml.safe_load(f)
        else:
            spec = yaml.safe_load(spec)
    items = spec.get("sources") if isinstance(spec, dict) else spec
    if not isinstance(items, list) or not items:
        raise ValueError("Data sources: expected a non-empty `sources:` list of mappings (name, paths, weight, ...).")
    sources = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"Data sources: entry {i} is {type(item).__name__}, expected a mapping with name/paths.")
        try:
            sources.append(DataSource(**item))
        except TypeError as err:
            raise ValueError(f"Data sources: entry {i} ({item.get('name')!r}): {err}") from err
    return sources


def validate_sources(sources: list[DataSource]) -> None:
    """Config errors that must stop a run before any work starts."""
    if not sources:
        raise ValueError("OnlineDataScheduler: `sources` is empty; declare at least one DataSource.")
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"OnlineDataScheduler: duplicate source names {duplicates}; names must be unique.")
    if sum(s.weight for s in sources) <= 0:
        raise ValueError("OnlineDataScheduler: all source weights are zero; give at least one source a weight > 0.")
    for source in sources:
        source.resolve()


class SkipCounter:
    """Skips per reason for one source; the first `MAX_LOGGED_SKIPS` are logged with file and line."""

    def __init__(self, source: str, counts: dict[str, int] | None = None) -> None:
        self.source = source
        self.counts: dict[str, int] = dict(counts or {})

    def skip(self, reason: str, path: str, line: int | None, detail: str = "") -> None:
        total = sum(self.counts.values())
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if total < MAX_LOGGED_SKIPS:
            where = f"{path}:{line + 1}" if line is not None else path
            logger.warning("source %s: skipped %s at %s %s", self.source, reason, where, detail)

    def replay(self, events: list[tuple[Any, ...]]) -> None:
        """Counts skips recorded earlier (`(reason, path, line, detail)`), e.g. while reading ahead."""
        for event in events:
            self.skip(*event)


# ---- raw records ----


def iter_raw_records(
    path: str, fmt: str, txt_unit: str, skips: SkipCounter, source: DataSource | None = None
) -> Iterator[Any]:
    """Yields the raw records of one file in order.

    A transient error (network, 5xx, dropped connection) is retried `source.read_retries` times with backoff,
    reopening the file and skipping the records already yielded, so nothing is lost or repeated; then
    `source.on_read_error` decides. Errors that a retry cannot fix end the file as a counted skip.
    """
    yielded, failures = 0, 0
    options = source.storage_options if source is not None else {}
    while True:
        try:
            for index, record in enumerate(_file_records(path, fmt, txt_unit, skips, options)):
                if index >= yielded:
                    yielded += 1
                    failures = 0
                    yield record
            return
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            skips.skip("truncated_file", path, None, repr(err))
            return
        except FileNotFoundError as err:
            skips.skip("missing_file", path, None, repr(err))
            return
        except Exception as err:  # zstandard.ZstdError, pyarrow.ArrowInvalid, botocore...: one file, not a dead run
            if not _transient(err):
                skips.skip("unreadable_file", path, None, repr(err))
                return
            failures += 1
            retries = source.read_retries if source is not None else 0
            if failures > retries:
                _give_up(source, path, err, failures, yielded, skips)
                return
            delay = min(60.0, (source.retry_backoff if source is not None else 0) * 2 ** (failures - 1))
            logger.warning(
                "reading %s failed after %d records (%s: %s); retry %d/%d in %.1fs",
                path,
                yielded,
                type(err).__name__,
                err,
                failures,
                retries,
                delay,
            )
            time.sleep(delay)


def _give_up(
    source: DataSource | None, path: str, err: Exception, failures: int, yielded: int, skips: SkipCounter
) -> None:
    """After the last retry the source's `on_read_error` decides: a dead run, or one file counted as skipped."""
    if source is not None and source.on_read_error == "raise":
        raise OSError(
            f"DataSource `{source.name}`: reading {path} failed {failures} times, the last after "
            f"{yielded} records ({type(err).__name__}: {err}); fix the store and resume from the last "
            "checkpoint, or set `on_read_error: skip` to count such files as skipped."
        ) from err
    skips.skip("read_error", path, None, f"after {yielded} records: {err!r}")


def _file_records(path: str, fmt: str, txt_unit: str, skips: SkipCounter, options: dict[str, Any]) -> Iterator[Any]:
    import fsspec

    with fsspec.open(path, "rb", **options) as raw:
        if fmt == "parquet":
            yield from _parquet_rows(raw)
            return
        stream = _decompressed(raw, fmt)
        if fmt == "txt" and txt_unit == "file":
            data = stream.read()
            if not data:
                skips.skip("empty_file", path, None)
                return
            yield data
            return
        empty = True
        for line in stream:
            empty = False
            yield line
        if empty:
            skips.skip("empty_file", path, None)


_PERMANENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
_TRANSIENT_MODULES = ("botocore", "aiobotocore", "aiohttp", "urllib3", "requests", "http", "s3fs", "gcsfs", "adlfs")


def _transient(err: BaseException) -> bool:
    """Whether retrying the read may help: connection and server errors, not a missing or corrupt file."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, _PERMANENT):
            return False
        if isinstance(err, ConnectionError | TimeoutError) or type(err).__module__.split(".")[0] in _TRANSIENT_MODULES:
            return True
        err = err.__cause__ or err.__context__
    return False


def _decompressed(raw: io.BufferedIOBase, fmt: str) -> io.BufferedIOBase:
    if fmt == "jsonl.gz":
        return io.BufferedReader(gzip.GzipFile(fileobj=raw))
    if fmt == "jsonl.zst":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    return raw


def _parquet_rows(raw: io.BufferedIOBase) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(raw).iter_batches(batch_size=1024):
        yield from batch.to_pylist()


# ---- normalisation ----


def normalise_record(raw: Any, source: DataSource, fmt: str, skips: SkipCounter, path: str, line: int) -> str | None:
    """Raw record -> text, or None after counting why it was skipped."""
    if fmt == "txt":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            skips.skip("invalid_utf8", path, line)
            return None
        text = text.rstrip("\n") if source.txt_unit == "line" else text
        record: Any = text
    elif fmt == "parquet":
        record = raw
    else:
        if not raw.strip():
            skips.skip("blank_line", path, line)
            return None
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            skips.skip("invalid_utf8", path, line)
            return None
        except ValueError as err:
            skips.skip("malformed_json", path, line, str(err)[:80])
            return None
    return _text_of(record, source, skips, path, line)


def _text_of(record: Any, source: DataSource, skips: SkipCounter, path: str, line: int) -> str | None:
    if source.normaliser is not None:
        try:
            text = source.normaliser(record)
        except Exception as err:  # a user callable failing on one record is a skip, not a dead run
            skips.skip("normaliser_error", path, line, repr(err)[:80])
            return None
    elif isinstance(record, str):
        text = record
    else:
        text = _field(record, source.text_field)
        if text is _MISSING:
            skips.skip("missing_text_field", path, line)
            return None
    if not isinstance(text, str):
        skips.skip("non_string_text", path, line, type(text).__name__)
        return None
    if not text.strip():
        skips.skip("empty_text", path, line)
        return None
    return text


_MISSING = object()


def _field(record: Any, dotted: str) -> Any:
    value = record
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


__all__ = ["DataSource", "FORMATS", "READ_ERROR_POLICIES", "SkipCounter", "load_sources", "validate_sources"]
