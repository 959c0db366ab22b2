"""The tokenizer trained at start-up reports the skips its readers counted, per source and reason."""

import json
import logging

from wonton_hf.data import DataSource
from wonton_hf.tokenization import train_tokenizer


def test_skip_counts_agree_with_the_reader(tmp_path, caplog):
    good = [json.dumps({"text": f"document number {i} with some words"}) for i in range(20)]
    bad = ["{not json", json.dumps({"body": "no text field"}), json.dumps({"text": 5}), "\xff broken"]
    (tmp_path / "en.jsonl").write_text("\n".join(good[:10] + bad + good[10:]) + "\n", encoding="utf-8")
    (tmp_path / "de.jsonl").write_text("\n".join(good) + "\n", encoding="utf-8")
    sources = [
        DataSource(name="en", paths=[str(tmp_path / "en.jsonl")]),
        DataSource(name="de", paths=[str(tmp_path / "de.jsonl")]),
    ]
    for source in sources:
        source.resolve()
    with caplog.at_level(logging.WARNING):
        result = train_tokenizer(sources, vocab_size=384, max_documents_per_source=15)
    logged = [r for r in caplog.records if "en" in r.getMessage() and "skip" in r.getMessage().lower()]
    skipped = result.stats.skipped
    assert sum(skipped["en"].values()) == 4 == len(logged), (skipped, [r.getMessage() for r in logged])
    assert sum(skipped["de"].values()) == 0
    assert result.stats.documents == {"en": 15, "de": 15}  # the per-source limit
    assert "4 records skipped (en: " in result.summary()
