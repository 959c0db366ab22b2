"""Scale: memory bounded by tokens, long documents in pieces, a fast first window, exact resume inside a document."""

from __future__ import annotations

import json
from itertools import islice

import numpy as np
import pytest
import torch

from wonton_hf.data import DataSource, OnlineDataScheduler
from wonton_hf.data.settings import PIECE_CHARS
from wonton_hf.data.stream import FIRST_BATCH_CHARS, split_text

from .data_fixtures import doc_text

BUDGET = 2 * PIECE_CHARS


def book(i: int, chars: int) -> str:
    parts, n, k = [], 0, 0
    while n < chars:
        parts.append(doc_text(("en", "de", "fr")[k % 3], i * 1000 + k))
        n += len(parts[-1]) + 1
        k += 1
    return "\n".join(parts)


@pytest.fixture
def books(tmp_path):
    """Six documents of 40k to 190k characters: several pieces each, far more than the token budget in all."""
    texts = [book(i, 40_000 + 30_000 * i) for i in range(6)]
    path = tmp_path / "books.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path, texts


def make(path, tokenizer, **kwargs):
    kwargs.setdefault("seq_len", 512)
    kwargs.setdefault("buffer_tokens", BUDGET)
    return OnlineDataScheduler([DataSource("books", [str(path)], exhaustion="stop")], tokenizer, **kwargs)


class _Watch:
    """Runs the scheduler's shard in process and records how many token ids its stream held at each window."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.held: list[int] = []
        self.dtypes: set[np.dtype] = set()

    def windows(self):
        for item in self.scheduler:
            stream = self.scheduler._live_run.streams[0]
            self.held.append(stream.held_tokens())
            if stream._piece is not None:
                self.dtypes.add(stream._piece.dtype)
            yield item


@pytest.mark.parametrize("prefetch_blocks", [0, 1])
def test_long_documents_stream_in_pieces_within_the_token_budget(books, tokenizer, prefetch_blocks):
    path, texts = books
    watch = _Watch(make(path, tokenizer, block_size=1024, prefetch_blocks=prefetch_blocks))
    batches: list[int] = []
    original = watch.scheduler.encode
    watch.scheduler.encode = lambda texts: _counted(original(texts), batches)
    windows = list(watch.windows())
    ids = torch.cat([w["input_ids"][w["source_ids"] >= 0] for w in windows])
    backend = tokenizer.backend_tokenizer
    expected = sum(
        sum(len(backend.encode(piece, add_special_tokens=False).ids) for piece in split_text(text)) + 1
        for text in texts
    )
    assert len(ids) == expected and int((ids == tokenizer.eos_token_id).sum()) == len(texts)
    assert max(len(p) for t in texts for p in split_text(t)) <= PIECE_CHARS < len(texts[0])
    assert max(watch.held) <= BUDGET, "a stream held more token ids than its budget"
    assert (prefetch_blocks + 1) * max(batches) <= BUDGET, batches  # what is held at most, whatever the timing
    assert watch.dtypes == {np.dtype(np.int32)}


def test_the_budget_holds_in_tokens_when_a_script_takes_several_tokens_a_character(tmp_path, tokenizer):
    import random

    rng = random.Random(0)
    letters = "αβγδεζηθικλμνξοπρστυφχψω"  # two UTF-8 bytes each, unknown to the byte-level test BPE
    texts = [" ".join("".join(rng.choice(letters) for _ in range(6)) for _ in range(3000)) for _ in range(12)]
    path = tmp_path / "greek.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
    budget = 4 * PIECE_CHARS
    scheduler = make(path, tokenizer, buffer_tokens=budget)
    batches: list[int] = []  # tokens of each tokenizer batch
    original = scheduler.encode
    scheduler.encode = lambda texts: _counted(original(texts), batches)
    windows = list(scheduler)
    tokens = sum(int((w["source_ids"] >= 0).sum()) for w in windows)
    assert tokens > 1.5 * sum(map(len, texts)), "the test needs a script of more than one token a character"
    # the batch being packed and the one read ahead: at most two batches are held at a time
    assert 2 * max(batches) <= budget, batches


def _counted(encodings, counts):
    counts.append(sum(len(e.ids) for e in encodings))
    return encodings


def test_pieces_cut_after_whitespace_and_rejoin_to_the_text():
    text = book(0, 5 * PIECE_CHARS)
    pieces = split_text(text)
    assert "".join(pieces) == text and len(pieces) == 6
    assert all(p[-1].isspace() for p in pieces[:-1]) and all(len(p) <= PIECE_CHARS for p in pieces)
    assert split_text("x" * (PIECE_CHARS + 5)) == ["x" * PIECE_CHARS, "xxxxx"]  # no whitespace: a hard cut


@pytest.mark.parametrize("stop", [3, 17, 40])
def test_exact_resume_inside_a_long_document(books, tokenizer, stop):
    path, _ = books
    reference = [w["input_ids"] for w in islice(iter(make(path, tokenizer, seq_len=256)), stop + 10)]
    first = make(path, tokenizer, seq_len=256)
    snapshot = None
    for window in islice(iter(first), stop):
        snapshot = window["data_state"]
    assert 0 < snapshot["frontiers"]["books"]["token"], "the snapshot should fall inside a document"
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make(path, tokenizer, seq_len=256)
    resumed.load_state_dict(state)
    after = [w["input_ids"] for w in islice(iter(resumed), 10)]
    assert all(torch.equal(a, b) for a, b in zip(after, reference[stop:], strict=True))


def test_first_window_tokenizes_a_little_of_each_source_not_whole_blocks(tmp_path, tokenizer):
    sources, total = [], 0
    for lang in ("en", "de", "fr", "zh"):
        texts = [doc_text(lang, i) for i in range(2000)]
        total += sum(map(len, texts))
        (tmp_path / f"{lang}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        sources.append(DataSource(lang, [str(tmp_path / f"{lang}.jsonl")]))
    scheduler = OnlineDataScheduler(sources, tokenizer, seq_len=256, block_size=1024)
    encoded: list[int] = []
    original = scheduler.encode
    scheduler.encode = lambda texts: encoded.append(sum(map(len, texts))) or original(texts)
    next(iter(scheduler))
    # at most each source's first batch and the one read ahead after it (8k + 16k characters), not 1,024 records
    assert sum(encoded) <= len(sources) * 3 * FIRST_BATCH_CHARS < total / 4


def test_buffer_budget_is_validated(books, tokenizer):
    with pytest.raises(ValueError, match="`buffer_tokens`"):
        make(books[0], tokenizer, buffer_tokens=1000)


def test_ten_thousand_files_are_listed_once_and_the_state_does_not_grow_with_them(tmp_path, tokenizer, monkeypatch):
    import fsspec.implementations.local

    for count in (10, 10_000):
        folder = tmp_path / f"n{count}"
        folder.mkdir()
        for k in range(count):
            (folder / f"part-{k:05d}.jsonl").write_text(json.dumps({"text": doc_text("en", k)}) + "\n")
    globs = []
    original = fsspec.implementations.local.LocalFileSystem.glob
    monkeypatch.setattr(
        fsspec.implementations.local.LocalFileSystem,
        "glob",
        lambda self, *a, **k: globs.append(a) or original(self, *a, **k),
    )
    sizes = {}
    for count in (10, 10_000):
        source = DataSource("many", [str(tmp_path / f"n{count}" / "*.jsonl")])
        scheduler = OnlineDataScheduler([source], tokenizer, seq_len=64, block_size=4)
        for _ in islice(iter(scheduler), 20):
            pass
        sizes[count] = len(json.dumps(scheduler.state_dict()))
        assert len(source.files) == count
    assert len(globs) == 2, "each source should be listed once"
    assert abs(sizes[10_000] - sizes[10]) < 64, sizes


def test_a_block_of_long_documents_waits_on_disk_and_reads_back_in_any_order():
    from wonton_hf.data.spill import SpilledRecords, read_block

    records = iter([b"x" * 1000 + b"%d" % i for i in range(50)])
    block = read_block(records, 20, 5000)
    assert isinstance(block, SpilledRecords) and len(block) == 20
    assert [block[i] for i in (7, 0, 19)] == [b"x" * 1000 + b"%d" % i for i in (7, 0, 19)]
    assert next(records) == b"x" * 1000 + b"20"  # the block took exactly its records
    assert read_block(iter([b"a", b"b"]), 20, 5000) == [b"a", b"b"]
    rows = [{"text": "y" * 3000}] * 5  # parquet rows stay in memory
    assert read_block(iter(rows), 20, 5000) == rows


def test_a_shard_holds_only_its_own_records_of_a_split_block():
    from wonton_hf.data.spill import SpilledRecords, read_block

    doc = [b"x" * 1000 + b"%d" % i for i in range(20)]
    odd = read_block(iter(doc), 20, 15_000, keep=lambda i: i % 2 == 1)  # 10 kept records: 10 KB, held
    assert isinstance(odd, list) and odd == [r if i % 2 else None for i, r in enumerate(doc)]
    third = read_block(iter(doc), 20, 5_000, keep=lambda i: i % 3 == 0)  # 7 KB kept: to disk
    assert isinstance(third, SpilledRecords) and len(third) == 20
    assert [third[i] for i in range(20)] == [r if i % 3 == 0 else None for i, r in enumerate(doc)]


@pytest.mark.parametrize("num_files,num_shards", [(1, 4096), (3, 4), (100, 4096), (5, 4), (4, 4)])
def test_with_fewer_files_than_shards_each_shard_reads_at_most_two_files_for_an_equal_share(num_files, num_shards):
    """1,024 ranks x 4 workers on a source of 100 files: each shard opens at most 2 of them (split round-robin
    record by record, each opened all 100), and the shards' shares differ by a few records at most."""
    from collections import Counter

    from wonton_hf.data.layout import owner, readers

    block_size, records = 1024, 3 * 1024  # three blocks a file
    per_shard: Counter[int] = Counter()
    files_read: Counter[int] = Counter()
    for file_pos in range(num_files):
        shards = readers(num_shards, num_files, file_pos)
        files_read.update(shards)
        owners = [
            owner(num_shards, num_files, file_pos, i // block_size, i % block_size, block_size) for i in range(records)
        ]
        assert set(owners) <= set(shards)  # only a file's readers own its records
        per_shard.update(owners)
    assert sorted(files_read) == list(range(num_shards))
    if num_files >= num_shards:  # whole files
        assert max(files_read.values()) == -(-num_files // num_shards)
    else:
        assert max(files_read.values()) <= 2
        shares = [per_shard[s] for s in range(num_shards)]
        assert sum(shares) == num_files * records and max(shares) - min(shares) <= 4
