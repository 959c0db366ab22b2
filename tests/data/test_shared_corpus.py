"""The scheduler on the shared multilingual corpus (slow; skipped when ../shared is absent)."""

from __future__ import annotations

import pytest

from wonton_hf.data import DataSource, OnlineDataScheduler

from ..paths import SHARED, needs_shared

CORPUS = SHARED / "corpus"
LANGUAGES = ("en", "de", "fr", "es", "it", "zh", "ja", "ko")

pytestmark = [
    pytest.mark.slow,
    needs_shared("corpus", "lo_en.jsonl.gz"),
]


def test_shares_and_packing_on_the_shared_corpus(tokenizer):
    sources = [DataSource(name=lang, paths=[str(CORPUS / f"lo_{lang}.jsonl.gz")], language=lang) for lang in LANGUAGES]
    scheduler = OnlineDataScheduler(sources, tokenizer, seq_len=2048, block_size=256)
    counts = [0] * len(LANGUAGES)
    real = 0
    for k, window in zip(range(1, 1201), scheduler, strict=False):
        ids = window["source_ids"]
        real += int((ids >= 0).sum())
        for i, c in enumerate(ids[ids >= 0].bincount(minlength=len(LANGUAGES)).tolist()):
            counts[i] += c
        if k >= 800:
            assert max(abs(c / (k * 2048) - 1 / 8) * 8 for c in counts) < 0.01
    assert real / (1200 * 2048) >= 0.999
    stats = scheduler.stats()
    assert all(stats[lang]["language"] == lang and stats[lang]["documents"] > 0 for lang in LANGUAGES)
