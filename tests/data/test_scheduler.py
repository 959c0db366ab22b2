"""Scheduler behaviour: determinism, packing invariants, shares, stratified batches, schedules, live edits."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections import Counter

import pytest
import torch

from wonton_hf.data import (
    SHARD_SCHEMA,
    STATE_SCHEMA,
    DataSource,
    Exp3Feedback,
    OnlineDataScheduler,
    PackedWindowCollator,
    WeightSchedule,
)
from wonton_hf.data.callbacks import MixtureFileCallback

from .data_fixtures import doc_text


def make(corpus, tokenizer, weights=None, exhaustion="repeat", **kwargs):
    weights = weights or {"en": 4, "de": 3, "fr": 2, "zh": 1}
    sources = [
        DataSource(name=n, paths=[str(p) for p in corpus[n]], weight=w, exhaustion=exhaustion)
        for n, w in weights.items()
    ]
    kwargs.setdefault("seq_len", 128)
    kwargs.setdefault("block_size", 16)
    return OnlineDataScheduler(sources, tokenizer, **kwargs)


def take(scheduler, n):
    it = iter(scheduler)
    return [next(it) for _ in range(n)]


def test_deterministic_under_seed(corpus, tokenizer):
    a = [w["input_ids"].tolist() for w in take(make(corpus, tokenizer, seed=3), 40)]
    b = [w["input_ids"].tolist() for w in take(make(corpus, tokenizer, seed=3), 40)]
    c = [w["input_ids"].tolist() for w in take(make(corpus, tokenizer, seed=4), 40)]
    assert a == b
    assert a != c


def test_one_settings_object_or_keywords_build_the_same_stream(corpus, tokenizer):
    """The launcher passes a `SchedulerSettings`, library users keywords: one stream; keywords override the object,
    and the token ids the shards need are filled in from the tokenizer once."""
    from wonton_hf.data import SchedulerSettings

    settings = SchedulerSettings(seq_len=128, block_size=16, seed=3)
    by_object = make(corpus, tokenizer, settings=settings)
    by_keywords = make(corpus, tokenizer, seed=3)
    assert by_object.settings == by_keywords.settings and by_object.settings.eos_token_id == tokenizer.eos_token_id
    assert [w["input_ids"].tolist() for w in take(by_object, 20)] == [
        w["input_ids"].tolist() for w in take(by_keywords, 20)
    ]
    assert make(corpus, tokenizer, settings=settings, seed=4).settings.seed == 4 and settings.seed == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seq_len = 64  # type: ignore[misc]
    with pytest.raises(TypeError, match="seq_lenn"):
        make(corpus, tokenizer, seq_lenn=64)
    with pytest.raises(ValueError, match="`seq_len` must be a positive integer, got 0"):
        SchedulerSettings(seq_len=0)


@pytest.mark.parametrize("share_tolerance", [None, 0.005])
def test_packing_invariants(corpus, tokenizer, share_tolerance):
    eos = tokenizer.eos_token_id
    windows = take(make(corpus, tokenizer, share_tolerance=share_tolerance, min_segment_tokens=24), 60)
    share_cuts = 0
    for w in windows:
        ids, pos, labels, src = w["input_ids"], w["position_ids"], w["labels"], w["source_ids"]
        assert ids.shape == pos.shape == labels.shape == src.shape == (128,)
        starts = torch.nonzero(pos == 0).flatten().tolist()
        assert starts[0] == 0
        for previous, s in zip(starts, starts[1:], strict=False):
            if ids[s - 1] != eos:  # a segment ends mid-window only at EOS, or at a share cut
                assert share_tolerance is not None
                assert s - previous >= 24  # a share cut never leaves less than min_segment_tokens
                share_cuts += 1
        diffs = pos[1:] - pos[:-1]
        assert bool(((diffs == 1) | (pos[1:] == 0)).all())  # positions count up within a document
        assert (labels[pos == 0] == -100).all()
        assert (labels[pos > 0] == ids[pos > 0]).all()
        for s, e in zip(starts, starts[1:] + [128], strict=True):
            assert len(set(src[s:e].tolist())) == 1  # one source per segment
    assert share_cuts > 0 or share_tolerance is None


def relative_share_errors(windows, weights, seq_len):
    """Worst |share - weight| / weight over all sources after each window."""
    counts, errors = Counter(), []
    for k, w in enumerate(windows, 1):
        counts.update(w["source_ids"].tolist())
        errors.append(
            max(abs(counts[i] / (k * seq_len) - weight) / weight for i, weight in enumerate(weights.values()))
        )
    return errors


def test_small_sources_keep_their_relative_share(corpus, tokenizer):
    weights = {"en": 0.9, "de": 0.04, "fr": 0.04, "zh": 0.02}
    exact = relative_share_errors(
        take(make(corpus, tokenizer, weights=weights, min_segment_tokens=8), 400), weights, 128
    )
    whole = relative_share_errors(
        take(make(corpus, tokenizer, weights=weights, share_tolerance=None), 400), weights, 128
    )
    assert max(exact[200:]) < 0.02, max(exact[200:])
    assert max(whole[200:]) > 2 * max(exact[200:])  # whole documents from a 2% source overshoot by far more


def test_every_document_exactly_once_until_exhausted(corpus, tokenizer):
    scheduler = make(corpus, tokenizer, exhaustion="stop", seq_len=96)
    items = list(scheduler)
    docs = []
    for source in range(4):  # a cut document continues later in its own source's tokens
        current = []
        for t in torch.cat([w["input_ids"][w["source_ids"] == source] for w in items]).tolist():
            current.append(t)
            if t == tokenizer.eos_token_id:
                docs.append(tokenizer.decode(current[:-1]))
                current = []
        assert not current
    expected = [doc_text("en", i) for i in range(200)] + [doc_text("de", i) for i in range(150)]
    expected += [doc_text("fr", i) for i in range(100)] + [doc_text("zh", i) for i in range(150)]
    assert Counter(docs) == Counter(expected)
    real = sum(int((w["source_ids"] >= 0).sum()) for w in items)
    assert real / (len(items) * 96) > 0.99  # only the very last window is padded


def test_token_shares_track_weights_within_about_one_document(corpus, tokenizer):
    weights = {"en": 0.55, "de": 0.25, "fr": 0.15, "zh": 0.05}
    scheduler = make(corpus, tokenizer, weights=weights)
    windows = take(scheduler, 300)
    longest = max(len(tokenizer(doc_text(lang, i))["input_ids"]) + 1 for lang in weights for i in range(200))
    counts = Counter()
    for k, w in enumerate(windows, 1):
        counts.update(w["source_ids"].tolist())
        total = k * 128
        for i, (name, weight) in enumerate(weights.items()):
            # One segment of its own, plus its weight's share of one more: the source furthest behind *relative to
            # its weight* goes next, so a heavy source may wait for one segment of a light one.
            assert abs(counts[i] - weight * total) <= longest * (1 + weight), (name, k)
    shares = {n: counts[i] / (300 * 128) for i, n in enumerate(weights)}
    assert shares["zh"] == pytest.approx(0.05, rel=0.1)


def test_stratified_batches_match_weights_up_to_one_document(corpus, tokenizer):
    weights = {"en": 0.7, "de": 0.3}
    scheduler = make(corpus, tokenizer, weights=weights, batch_size=4, stratified=True, seq_len=64)
    windows = take(scheduler, 80)
    longest = max(len(tokenizer(doc_text(lang, i))["input_ids"]) + 1 for lang in weights for i in range(200))
    for b in range(0, 80, 4):
        ids = torch.cat([w["source_ids"] for w in windows[b : b + 4]])
        n = ids.numel()
        for i, weight in enumerate(weights.values()):
            assert abs(int((ids == i).sum()) - weight * n) <= longest


def test_schedule_switches_at_the_right_step(corpus, tokenizer):
    schedule = WeightSchedule(points=[(0, {"en": 1, "de": 0}), (3, {"en": 0, "de": 1})])
    scheduler = make(corpus, tokenizer, weights={"en": 1, "de": 1}, schedule=schedule, batch_size=2, seq_len=64)
    windows = take(scheduler, 12)
    for k, w in enumerate(windows):
        step = k // 2  # batch_size 2, no accumulation
        first_doc = w["source_ids"][
            : int(torch.nonzero(w["position_ids"] == 0).flatten()[1]) if (w["position_ids"] == 0).sum() > 1 else 64
        ]
        rest = w["source_ids"][len(first_doc) :]
        expected = 0 if step < 3 else 1
        assert (rest == expected).all(), (k, rest)
    linear = WeightSchedule(
        points=[(0, {"a": 1, "b": 0}), (100, {"a": 0, "b": 1})], unit="tokens", interpolation="linear"
    )
    assert linear(25, ["a", "b"]) == pytest.approx({"a": 0.75, "b": 0.25})
    assert linear(1000, ["a", "b"]) == {"a": 0.0, "b": 1.0}


def test_live_edit_applies_at_recorded_step_and_bad_edits_are_rejected(corpus, tokenizer, caplog, tmp_path):
    scheduler = make(corpus, tokenizer, weights={"en": 1, "de": 1}, seq_len=64)
    it = iter(scheduler)
    for _ in range(5):
        next(it)
    for bad, reason in [
        ({"xx": 1}, "unknown source"),
        ({"en": -1}, ">= 0"),
        ({"en": 0, "de": 0}, "all weights are zero"),
    ]:
        with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match=reason):
            scheduler.set_weights(bad)
        assert "rejected" in caplog.text
    assert scheduler.weights == {"en": 0.5, "de": 0.5}
    step = scheduler.set_weights({"en": 0})
    assert step == 6 and scheduler.controller.pending[-1]["step"] == 6
    windows = [next(it) for _ in range(10)]  # windows 5.. (steps 5..14)
    later = torch.cat([w["source_ids"][w["position_ids"].cumsum(0) > 0] for w in windows[2:]])
    assert (later == 1).all()
    # The file route: a broken file is logged and ignored, a valid one is journalled.
    mixture = tmp_path / "mix.yaml"
    callback = MixtureFileCallback(scheduler, str(mixture), every_n_steps=1)
    mixture.write_text("weights: {en: 1, de: -3}\n")
    state = type("S", (), {"global_step": 15})()
    with caplog.at_level(logging.WARNING):
        callback.on_step_end(None, state, None)
    assert "rejected" in caplog.text and scheduler.controller.count("set") == 1
    mixture.write_text("en: 3\n")
    callback.on_step_end(None, state, None)
    assert scheduler.controller.pending[-1]["weights"] == {"en": 3.0, "de": 1.0}


def test_feedback_raises_the_weight_of_the_higher_loss_source():
    feedback = Exp3Feedback(smoothing=0.5, learning_rate=1.0, min_weight=0.05, max_weight=0.9)
    base = {"hard": 0.5, "easy": 0.5}
    for _ in range(20):
        multipliers = feedback.update({"hard": 4.0, "easy": 1.0}, base)
    weights = {n: base[n] * multipliers[n] for n in base}
    assert weights["hard"] > 0.8 and weights["easy"] >= 0.05 - 1e-9
    restored = Exp3Feedback(smoothing=0.5, learning_rate=1.0, min_weight=0.05, max_weight=0.9)
    restored.load_state_dict(json.loads(json.dumps(feedback.state_dict())))
    assert restored.update({"hard": 4.0, "easy": 1.0}, base) == feedback.update({"hard": 4.0, "easy": 1.0}, base)


@pytest.mark.parametrize("smoothing", [0.9, 0.7, 0.0])
def test_feedback_smoothing_weights_the_previous_reward(smoothing):
    """reward <- smoothing * previous + (1 - smoothing) * loss; the first loss seeds the reward. At the default
    0.9 a jump from 2 to 12 moves the reward to 3.0 (not 11.0, as with the two weights swapped)."""
    feedback = Exp3Feedback(smoothing=smoothing, learning_rate=1.0)
    base = {"a": 0.5, "b": 0.5}
    feedback.update({"a": 2.0, "b": 2.0}, base)
    assert feedback.state_dict()["rewards"] == {"a": 2.0, "b": 2.0}
    multipliers = feedback.update({"a": 12.0, "b": 2.0}, base)
    reward_a = smoothing * 2.0 + (1 - smoothing) * 12.0
    assert feedback.state_dict()["rewards"] == pytest.approx({"a": reward_a, "b": 2.0})
    # The policy: EXP3 scores exp(rate * (r - max r)) mixed with the exploration floor eps = min(1/K, sqrt(ln K/(K t))).
    eps = min(0.5, math.sqrt(math.log(2) / (2 * 2)))
    score_b = math.exp(2.0 - reward_a)
    policy_a = (1 - 2 * eps) / (1 + score_b) + eps
    assert multipliers["a"] * base["a"] == pytest.approx(policy_a)
    assert multipliers["b"] * base["b"] == pytest.approx(1 - policy_a)


@pytest.mark.parametrize(("min_weight", "max_weight", "expected"), [(0.2, 1.0, 0.2), (0.0, 0.7, 0.3), (0.25, 0.7, 0.3)])
def test_feedback_weights_are_clamped_into_their_bounds(min_weight, max_weight, expected):
    """After 100 updates the exploration floor is ~0.06: the low-loss source's weight would fall to it
    unclamped; the bounds hold it at `min_weight` (or at 1 - `max_weight` of the other), summing to 1."""
    feedback = Exp3Feedback(smoothing=0.0, learning_rate=5.0, min_weight=min_weight, max_weight=max_weight)
    base = {"hard": 0.5, "easy": 0.5}
    for _ in range(100):
        multipliers = feedback.update({"hard": 5.0, "easy": 1.0}, base)
    weights = {n: base[n] * multipliers[n] for n in base}
    assert weights == pytest.approx({"hard": 1 - expected, "easy": expected})
    unclamped = Exp3Feedback(smoothing=0.0, learning_rate=5.0)
    for _ in range(100):
        free = unclamped.update({"hard": 5.0, "easy": 1.0}, base)
    assert base["easy"] * free["easy"] < 0.07  # the bounds above are what moved it


def test_feedback_default_smoothing_is_0_9():
    assert Exp3Feedback().smoothing == 0.9


def test_state_is_json_and_matches_documented_schema(corpus, tokenizer):
    scheduler = make(corpus, tokenizer)
    take(scheduler, 7)
    state = json.loads(json.dumps(scheduler.state_dict()))
    assert set(state) == set(STATE_SCHEMA)
    assert set(state["roles"]["0"]) == set(SHARD_SCHEMA)


def test_collator_batches_and_flash_kwargs(corpus, tokenizer):
    windows = take(make(corpus, tokenizer, seq_len=32), 3)
    batch = PackedWindowCollator(return_flash_attn_kwargs=True)(windows)
    assert batch["input_ids"].shape == (3, 32) and "data_state" in batch
    flat = batch["position_ids"].reshape(-1)
    starts = torch.nonzero(flat == 0).flatten().tolist()
    assert batch["cu_seq_lens_q"].tolist() == starts + [96]
    assert batch["max_length_q"] == max(b - a for a, b in zip(starts + [96], starts[1:] + [96], strict=False) if b > a)
    bare = PackedWindowCollator(keep_scheduler_fields=False)(windows)
    assert set(bare) == {"input_ids", "labels", "position_ids"}
