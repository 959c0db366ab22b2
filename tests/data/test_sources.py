"""Sources: formats, declaration (Python/YAML/fsspec), config errors before work, bad input counted not fatal."""

from __future__ import annotations

import gzip
import json
import logging

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wonton_hf.data import DataSource, OnlineDataScheduler, load_sources

from .data_fixtures import doc_text, write_jsonl


def first_texts(scheduler: OnlineDataScheduler, tokenizer, n: int = 50) -> str:
    it = iter(scheduler)
    return "".join(tokenizer.decode(next(it)["input_ids"].tolist()) for _ in range(n))


def drain(scheduler: OnlineDataScheduler, limit: int = 10_000) -> list[dict]:
    out = []
    for item in scheduler:
        out.append(item)
        if len(out) >= limit:
            raise AssertionError("stream did not end")
    return out


@pytest.mark.parametrize("compress,suffix", [(None, "jsonl"), ("gz", "jsonl.gz"), ("zst", "jsonl.zst")])
def test_jsonl_formats_are_read_completely(tmp_path, tokenizer, compress, suffix):
    path = write_jsonl(tmp_path / f"x.{suffix}", "de", range(40), compress)
    source = DataSource(name="de", paths=[str(path)], exhaustion="stop")
    items = drain(OnlineDataScheduler([source], tokenizer, seq_len=64, block_size=16))
    eos = sum(int((it["input_ids"] == tokenizer.eos_token_id).sum()) for it in items)
    assert eos == 40
    text = tokenizer.decode(torch_cat(items))
    assert all(f"de#{i}#" in text for i in range(40))


def torch_cat(items, source: int = 0):
    """The tokens of one source in stream order (a cut document continues later in its source's tokens)."""
    import torch

    return torch.cat([it["input_ids"][it["source_ids"] == source] for it in items]).tolist()


def test_txt_parquet_and_fsspec_url(tmp_path, tokenizer):
    lines = tmp_path / "a.txt"
    lines.write_text("\n".join(doc_text("en", i) for i in range(10)) + "\n")
    whole = tmp_path / "b.txt"
    whole.write_text(doc_text("fr", 1) + "\nsecond line of the same document")
    table = pa.table({"body": [doc_text("ja", i) for i in range(8)], "n": list(range(8))})
    pq.write_table(table, tmp_path / "c.parquet")
    with fsspec.open("memory://bucket/zh.jsonl.gz", "wb") as f:
        f.write(gzip.compress(b"".join(json.dumps({"text": doc_text("zh", i)}).encode() + b"\n" for i in range(6))))
    sources = [
        DataSource(name="lines", paths=[str(lines)], exhaustion="stop"),
        DataSource(name="whole", paths=[str(whole)], txt_unit="file", exhaustion="stop"),
        DataSource(name="pq", paths=[str(tmp_path / "*.parquet")], text_field="body", exhaustion="stop"),
        DataSource(name="remote", paths=["memory://bucket/*.jsonl.gz"], exhaustion="stop"),
    ]
    scheduler = OnlineDataScheduler(sources, tokenizer, seq_len=64, block_size=4)
    items = drain(scheduler)
    stats = scheduler.stats()
    assert {n: s["documents"] for n, s in stats.items()} == {"lines": 10, "whole": 1, "pq": 8, "remote": 6}
    whole_tokens = [t for it in items for t in it["input_ids"][it["source_ids"] == 1].tolist()]
    assert tokenizer.decode(whole_tokens, skip_special_tokens=True).endswith("second line of the same document")


def test_yaml_declaration_with_normaliser_and_nested_field(tmp_path, tokenizer):
    (tmp_path / "code.jsonl").write_text(
        "\n".join(json.dumps({"payload": {"code": f"def f{i}(): pass"}, "keep": i % 2 == 0}) for i in range(10))
    )
    (tmp_path / "meta.jsonl").write_text("\n".join(json.dumps({"meta": {"body": doc_text("en", i)}}) for i in range(5)))
    spec = tmp_path / "sources.yaml"
    spec.write_text(
        f"""
sources:
  - name: code
    paths: ["{tmp_path}/code.jsonl"]
    normaliser: json:dumps
    weight: 2
    exhaustion: stop
  - name: meta
    paths: ["{tmp_path}/meta.jsonl"]
    text_field: meta.body
    language: en
    exhaustion: stop
"""
    )
    sources = load_sources(str(spec))
    assert [s.weight for s in sources] == [2, 1.0] and sources[1].language == "en"
    scheduler = OnlineDataScheduler(str(spec), tokenizer, seq_len=64, block_size=4)
    items = drain(scheduler)
    code, meta = tokenizer.decode(torch_cat(items, 0)), tokenizer.decode(torch_cat(items, 1))
    assert '"code": "def f4(): pass"' in code and '"keep": true' in code and "en#4#" in meta
    assert scheduler.stats()["code"]["documents"] == 10 and scheduler.stats()["meta"]["documents"] == 5


@pytest.mark.parametrize(
    "make,error",
    [
        (lambda d: [DataSource(name="a", paths=[str(d / "nothing*.jsonl")])], "no file matches"),
        (lambda d: [DataSource(name="a", paths=[str(d / "ok.jsonl")])] * 2, "duplicate source names"),
        (lambda d: [DataSource(name="a", paths=[str(d / "ok.csv")])], "cannot tell the format"),
        (lambda d: [DataSource(name="a", paths=[str(d / "ok.jsonl")], format="csv")], "unknown `format`"),
        (lambda d: [DataSource(name="a", paths=[str(d / "ok.jsonl")], weight=0)], "all source weights are zero"),
        (lambda d: [DataSource(name="a", paths=[str(d / "ok.jsonl")], weight=-1)], "`weight` must be"),
        (lambda d: [DataSource(name="a", paths=[str(d / "ok.jsonl")], exhaustion="loop")], "`exhaustion`"),
    ],
)
def test_config_errors_fail_before_work(tmp_path, tokenizer, make, error):
    (tmp_path / "ok.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "ok.csv").write_text("x\n")
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        OnlineDataScheduler(make(tmp_path), tokenizer, seq_len=16)


def test_bad_input_is_counted_not_fatal(tmp_path, tokenizer, caplog):
    good = [json.dumps({"text": doc_text("en", i)}) for i in range(6)]
    bad_lines = [
        b"{not json",
        b'{"text": "caf\xff\xfe"}',
        json.dumps({"body": "no text field"}).encode(),
        json.dumps({"text": 42}).encode(),
        json.dumps({"text": "   "}).encode(),
    ]
    mixed = b"\n".join([good[0].encode(), *bad_lines, good[1].encode()]) + b"\n"
    (tmp_path / "mixed.jsonl").write_bytes(mixed)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    full = gzip.compress("".join(line + "\n" for line in good[2:]).encode())
    (tmp_path / "truncated.jsonl.gz").write_bytes(full[: len(full) // 2])
    write_jsonl(tmp_path / "vanishing.jsonl", "de", range(3))
    (tmp_path / "dir.jsonl").mkdir()  # "a file that cannot be read"
    source = DataSource(
        name="dirty", paths=[str(tmp_path / "*.jsonl"), str(tmp_path / "*.jsonl.gz")], exhaustion="stop"
    )
    scheduler = OnlineDataScheduler([source], tokenizer, seq_len=32, block_size=4)
    (tmp_path / "vanishing.jsonl").unlink()  # listed at start, gone when read
    with caplog.at_level(logging.WARNING, logger="wonton_hf.data.sources"):
        items = drain(scheduler)
    skipped = scheduler.stats()["dirty"]["skipped"]
    assert skipped == {
        "malformed_json": 1,
        "invalid_utf8": 1,
        "missing_text_field": 1,
        "non_string_text": 1,
        "empty_text": 1,
        "empty_file": 1,
        "truncated_file": 1,
        "missing_file": 1,
        "unreadable_file": 1,
    }
    assert scheduler.stats()["dirty"]["documents"] >= 2  # the good lines still made it
    assert items and any("mixed.jsonl:2" in r.getMessage() for r in caplog.records)


def test_read_ahead_changes_neither_the_stream_nor_when_skips_are_counted(tmp_path, tokenizer):
    """Blocks are read and tokenized ahead; a snapshot must still count only the skips of what was consumed."""
    for f in range(3):
        lines = []
        for i in range(12):
            lines.append(json.dumps({"text": doc_text("en", f * 12 + i)}))
            if i % 5 == 2:
                lines.append("{broken json")
        (tmp_path / f"part{f}.jsonl").write_text("\n".join(lines) + "\n")

    def run(prefetch_blocks):
        source = DataSource(name="en", paths=[str(tmp_path / "*.jsonl")], exhaustion="stop")
        scheduler = OnlineDataScheduler([source], tokenizer, seq_len=32, block_size=4, prefetch_blocks=prefetch_blocks)
        return [(w["input_ids"].tolist(), w["data_state"]["skips"]) for w in scheduler]

    synchronous, ahead = run(0), run(2)
    assert ahead == synchronous
    assert synchronous[0][1]["en"].get("malformed_json", 0) < synchronous[-1][1]["en"]["malformed_json"] == 6


def test_skips_after_the_last_window_are_logged_not_lost(tmp_path, tokenizer, caplog):
    """The last full window's snapshot is taken before the stream reads on to find its end; bad records met
    then ride on no window, so the shard logs them (the scheduler's stats cannot count them)."""
    text = doc_text("en", 0)
    lines = [json.dumps({"text": text}), "{broken", "{broken"]
    (tmp_path / "tail.jsonl").write_text("\n".join(lines) + "\n")
    seq_len = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1  # the document and its EOS fill it
    source = DataSource(name="en", paths=[str(tmp_path / "tail.jsonl")], exhaustion="stop")
    scheduler = OnlineDataScheduler([source], tokenizer, seq_len=seq_len, block_size=1)
    with caplog.at_level(logging.WARNING, logger="wonton_hf.data.scheduler"):
        windows = list(scheduler)
    assert len(windows) == 1 and windows[0]["data_state"]["skips"]["en"] == {}
    late = [r.getMessage() for r in caplog.records if "after the last window" in r.getMessage()]
    assert late == [
        "source en: 2 malformed_json skipped after the last window of shard 0 (not in the scheduler's stats)"
    ]
