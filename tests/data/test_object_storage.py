"""Sources on an S3-compatible server (moto, started here): globs, formats, exact resume, faults, pre-flight errors."""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from itertools import islice

import pytest
import torch

from wonton_hf.data import DataSource, OnlineDataScheduler

from .data_fixtures import doc_text

FAST_FAIL = {"config_kwargs": {"retries": {"max_attempts": 1}}}
"""s3fs/botocore give up at once, so the scheduler's own retries (which resume the stream) are what is tested."""


def upload(s3, bucket="corpus"):
    """en: 3 jsonl, de: 2 jsonl.zst, fr: 1 parquet; the texts by source."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    client = s3.client()
    client.create_bucket(Bucket=bucket)
    texts = {"en": [], "de": [], "fr": []}
    for k in range(3):
        docs = [doc_text("en", k * 40 + i) * 3 for i in range(40)]
        texts["en"] += docs
        body = "".join(json.dumps({"text": t}) + "\n" for t in docs).encode()
        client.put_object(Bucket=bucket, Key=f"en/part-{k}.jsonl", Body=body)
    for k in range(2):
        docs = [doc_text("de", k * 30 + i) for i in range(30)]
        texts["de"] += docs
        body = zstandard.ZstdCompressor().compress("".join(json.dumps({"text": t}) + "\n" for t in docs).encode())
        client.put_object(Bucket=bucket, Key=f"de/part-{k}.jsonl.zst", Body=body)
    docs = [doc_text("fr", i) for i in range(50)]
    texts["fr"] = docs
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": docs}), buffer)
    client.put_object(Bucket=bucket, Key="fr/part-0.parquet", Body=buffer.getvalue())
    return texts


def sources(s3, bucket="corpus", **kwargs):
    options = {"endpoint_url": s3.endpoint, "key": "test", "secret": "test", "default_block_size": 4096, **FAST_FAIL}
    kwargs.setdefault("retry_backoff", 0.05)
    return [
        DataSource("en", [f"s3://{bucket}/en/*.jsonl"], weight=3, storage_options=options, exhaustion="stop", **kwargs),
        DataSource(
            "de", [f"s3://{bucket}/de/*.jsonl.zst"], weight=2, storage_options=options, exhaustion="stop", **kwargs
        ),
        DataSource(
            "fr", [f"s3://{bucket}/fr/*.parquet"], weight=1, storage_options=options, exhaustion="stop", **kwargs
        ),
    ]


def documents(windows, tokenizer) -> Counter:
    """Every document of a finite stream, as token tuples (segments of one source joined in order)."""
    by_source: dict[int, list[int]] = {}
    for w in windows:
        for token, source in zip(w["input_ids"].tolist(), w["source_ids"].tolist(), strict=True):
            if source >= 0:
                by_source.setdefault(source, []).append(token)
    docs = Counter()
    eos = tokenizer.eos_token_id
    for tokens in by_source.values():
        start = 0
        for i, t in enumerate(tokens):
            if t == eos:
                docs[tuple(tokens[start:i])] += 1
                start = i + 1
    return docs


def expected(texts, tokenizer) -> Counter:
    return Counter(tuple(tokenizer(t, add_special_tokens=False)["input_ids"]) for docs in texts.values() for t in docs)


def test_s3_globs_of_every_format_read_every_document_once(s3, tokenizer):
    texts = upload(s3)
    scheduler = OnlineDataScheduler(sources(s3), tokenizer, seq_len=128, block_size=16)
    assert [len(s.files) for s in scheduler.sources] == [3, 2, 1]
    assert documents(list(scheduler), tokenizer) == expected(texts, tokenizer)


def test_endpoint_and_credentials_from_the_environment(s3, tokenizer, monkeypatch):
    texts = upload(s3)
    for name, value in {
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    source = DataSource("en", ["s3://corpus/en/*.jsonl"], exhaustion="stop")
    windows = list(OnlineDataScheduler([source], tokenizer, seq_len=128, block_size=16))
    assert documents(windows, tokenizer) == expected({"en": texts["en"]}, tokenizer)


def test_exact_resume_on_object_storage(s3, tokenizer):
    upload(s3)
    reference = [w["input_ids"] for w in islice(iter(OnlineDataScheduler(sources(s3), tokenizer, seq_len=64)), 30)]
    first = OnlineDataScheduler(sources(s3), tokenizer, seq_len=64)
    for _ in islice(iter(first), 12):
        pass
    resumed = OnlineDataScheduler(sources(s3), tokenizer, seq_len=64)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    after = [w["input_ids"] for w in islice(iter(resumed), 18)]
    assert all(torch.equal(a, b) for a, b in zip(after, reference[12:], strict=True))


def test_faults_are_retried_and_nothing_is_lost_or_repeated(s3, tokenizer, caplog):
    texts = upload(s3)
    scheduler = OnlineDataScheduler(sources(s3, read_retries=6), tokenizer, seq_len=128, block_size=16)
    stream = iter(scheduler)
    with caplog.at_level(logging.WARNING, logger="wonton_hf.data.sources"):
        windows = list(islice(stream, 3))
        s3.fail_next(2)
        windows += list(islice(stream, 3))
        s3.drop_next(2)
        windows += list(islice(stream, 3))
        s3.outage_after(1, 3.0)  # longer than s3fs's own retries (about 2 s), so the scheduler's are needed
        windows += list(stream)
    assert {"500", "drop", "stopped", "restarted"} <= set(s3.faults), s3.faults
    assert "retry 1/6" in caplog.text  # (s3fs absorbs some faults itself; the scheduler retries the rest)
    assert documents(windows, tokenizer) == expected(texts, tokenizer)
    assert all(not stats["skipped"] for stats in scheduler.stats().values())


def test_a_lasting_outage_is_an_error_naming_the_file_or_a_counted_skip(s3, tokenizer, caplog):
    upload(s3)
    failing = OnlineDataScheduler(sources(s3, read_retries=1), tokenizer, seq_len=128, block_size=16)
    s3.fail_next(10**6)
    with pytest.raises(OSError, match=r"DataSource `\w+`: reading s3://corpus/\w+/part-\d.*failed 2 times"):
        list(failing)
    s3.fail_next(0)
    skipping = OnlineDataScheduler(sources(s3, read_retries=0, on_read_error="skip"), tokenizer, seq_len=32)
    stream = iter(skipping)
    windows = list(islice(stream, 2))
    s3.fail_next(10**6)
    with caplog.at_level(logging.WARNING, logger="wonton_hf.data.sources"):
        windows += list(stream)  # what was read before the outage, then the end: no exception
    skipped = sum(s["skipped"].get("read_error", 0) for s in skipping.stats().values())
    assert skipped >= 1 and "skipped read_error at s3://corpus/" in caplog.text
    assert sum(s["documents"] for s in skipping.stats().values()) < 260


def test_missing_bucket_or_unreachable_store_fails_before_training(s3, tokenizer):
    upload(s3)
    with pytest.raises(FileNotFoundError, match="DataSource `en`: no file matches"):
        OnlineDataScheduler(sources(s3, bucket="no-such-bucket"), tokenizer)
    gone = sources(s3)
    for source in gone:
        source.storage_options["endpoint_url"] = "http://127.0.0.1:9"  # nothing listens on the discard port
    with pytest.raises(OSError, match="DataSource `en`: cannot list 's3://corpus/en/\\*.jsonl'"):
        OnlineDataScheduler(gone, tokenizer)


def test_wrong_credentials_fail_before_training_naming_the_source(s3, tokenizer, monkeypatch):
    import moto.settings

    upload(s3)
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # the server now checks credentials
    with pytest.raises(OSError, match=r"DataSource `en`: cannot list .*PermissionError.*credentials"):
        OnlineDataScheduler(sources(s3), tokenizer)
