"""Held-out documents: the training stream never yields them, whatever the layout, resume or world size; the
evaluation windows are built from exactly them, packed like training windows, with exact byte counts."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from wonton_hf.data import DataSource, OnlineDataScheduler
from wonton_hf.data.heldout import build_eval_windows, held_out_key, is_held_out

from .data_fixtures import doc_text
from .test_resume import DOCS, WEIGHTS, consumed_tokens, run_ranks

SHARE = 0.3


def expected(tokenizer, held_out: bool) -> dict[int, Counter]:
    out = {}
    for i, (name, ids) in enumerate(DOCS.items()):
        texts = [doc_text(name, k) for k in ids if is_held_out(doc_text(name, k), SHARE) == held_out]
        counter = Counter()
        for ids_ in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            counter.update(ids_ + [tokenizer.eos_token_id])
        out[i] = counter
    return out


def test_the_split_is_a_function_of_the_text_only():
    assert held_out_key("a text") == held_out_key("a text") != held_out_key("a text.")
    keys = [held_out_key(doc_text("en", i)) for i in range(2000)]
    assert 0.27 < sum(k < SHARE for k in keys) / len(keys) < 0.33  # uniform enough
    assert not is_held_out("anything", 0.0)


@pytest.mark.parametrize(
    "before,after,workers", [((2, 23), (3, None), 0), ((1, 31), (2, None), 2), ((3, 7), (1, None), 0)]
)
def test_no_held_out_document_is_trained_on_across_resume_and_world_size_change(
    corpus, tokenizer, before, after, workers
):
    """Every training token of the whole run (first layout, then an elastic resume on another world size that
    drains the sources) is a non-held-out document's, and every non-held-out document is trained on exactly once."""
    first, states = run_ranks(corpus, tokenizer, before[0], before[1], num_workers=workers, held_out_share=SHARE)
    assert all(s["held_out_share"] == SHARE for s in states)
    second, _ = run_ranks(corpus, tokenizer, after[0], after[1], states, held_out_share=SHARE)
    got = consumed_tokens(first + second)
    kept, held = expected(tokenizer, False), expected(tokenizer, True)
    for source in kept:
        assert got[source] == kept[source], list(WEIGHTS)[source]
        assert held[source], "the fixture must hold some documents out"
    # and the held-out documents are not in the run: their tokens would have made the counts larger
    assert all(sum(got[source].values()) == sum(kept[source].values()) for source in kept)


def test_a_resume_with_another_share_is_refused(corpus, tokenizer):
    _, states = run_ranks(corpus, tokenizer, 1, 5, held_out_share=SHARE)
    sources = [DataSource(name=n, paths=[str(p) for p in corpus[n]], weight=w) for n, w in WEIGHTS.items()]
    other = OnlineDataScheduler(sources, tokenizer, seq_len=64, block_size=8, seed=11, held_out_share=0.1)
    with pytest.raises(ValueError, match="held_out_share"):
        other.load_state_dict(json.loads(json.dumps(states[0])))


def test_eval_windows_are_the_held_out_documents_packed_like_training(corpus, tokenizer):
    scheduler = OnlineDataScheduler(
        [DataSource(name="de", paths=[str(p) for p in corpus["de"]])], tokenizer, seq_len=64, held_out_share=SHARE
    )
    built = build_eval_windows(
        scheduler.sources[0], scheduler.backend, scheduler.settings, num_windows=1000, share=SHARE
    )
    texts = [doc_text("de", k) for k in DOCS["de"] if is_held_out(doc_text("de", k), SHARE)]
    assert built.documents == len(texts) and len(built.windows) > 1
    ids = np.concatenate([w["input_ids"] for w in built.windows])
    want = [
        t for ids_ in tokenizer(texts, add_special_tokens=False)["input_ids"] for t in ids_ + [tokenizer.eos_token_id]
    ]
    assert ids[: len(want)].tolist() == want  # document order of the files, nothing else
    for w in built.windows:
        starts = np.flatnonzero(w["position_ids"] == 0)
        assert (w["labels"][starts] == -100).all() and w["input_ids"].shape == (64,)
    # bytes: every scored token's text, summed, is all the held-out text minus the segment-first tokens' bytes
    total = sum(len(t.encode()) for t in texts)
    assert 0 < sum(built.scored_bytes) <= total
    explicit = build_eval_windows(
        scheduler.sources[0], scheduler.backend, scheduler.settings, num_windows=2, share=None
    )
    assert len(explicit.windows) == 2
