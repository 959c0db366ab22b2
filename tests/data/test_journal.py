"""The mixture journal folds into constant-size state, stays exact, and one clock gives every window its step."""

from __future__ import annotations

import json
import random
from itertools import islice

import pytest
import torch
from torch.utils.data import DataLoader

from wonton_hf.data import DataSource, MixtureController, OnlineDataScheduler, PackedWindowCollator
from wonton_hf.data.resume import STATE_VERSION

WEIGHTS = {"en": 4, "de": 3, "fr": 2, "zh": 1}


def make(corpus, tokenizer, **kwargs):
    sources = [DataSource(n, [str(p) for p in corpus[n]], weight=w) for n, w in WEIGHTS.items()]
    kwargs.setdefault("seq_len", 32)
    kwargs.setdefault("block_size", 8)
    return OnlineDataScheduler(sources, tokenizer, **kwargs)


def feed(scheduler, steps, rng, every=2):
    """In-process run with loss-feedback-like changes every `every` steps; the weights and state size per step."""
    seen, sizes = [], []
    for n, _window in enumerate(islice(iter(scheduler), steps)):
        seen.append(scheduler.weights)
        if n % every == 0:
            scheduler.set_feedback({name: rng.uniform(0.2, 3.0) for name in WEIGHTS})
        sizes.append(len(json.dumps(scheduler.state_dict()["journal"])))
    return seen, sizes


def test_folded_journal_has_constant_size_and_the_weights_of_the_full_history(corpus, tokenizer):
    scheduler = make(corpus, tokenizer)
    full = MixtureController(list(WEIGHTS), {n: float(w) for n, w in WEIGHTS.items()})
    original = scheduler.channel.append  # every change the main process journals passes here once
    scheduler.channel.append = lambda entry: (full.append(entry), original(entry))
    seen, sizes = feed(scheduler, 300, random.Random(0))
    assert scheduler.controller.count("feedback") == 150 and len(full.pending) == 150
    assert seen == [full.weights_at(step) for step in range(300)]  # one window per step: window n is step n
    assert max(sizes[50:]) <= sizes[20] + 64, "the journal in the state grew with the run"
    assert len(scheduler.controller.pending) <= 2


def test_resume_replays_the_folded_journal_exactly(corpus, tokenizer):
    reference = make(corpus, tokenizer)
    feed(reference, 60, random.Random(1))
    state = json.loads(json.dumps(reference.state_dict()))
    expected = [w["input_ids"] for w in islice(_continue(reference, tokenizer), 20)]
    resumed = make(corpus, tokenizer)
    resumed.load_state_dict(state)
    assert resumed.weights == reference.controller.weights_at(59)
    after = [w["input_ids"] for w in islice(iter(resumed), 20)]
    assert all(torch.equal(a, b) for a, b in zip(after, expected, strict=True))


def _continue(scheduler, tokenizer):
    """Keeps iterating a scheduler from where `feed` stopped (a fresh iterator resumes from its state)."""
    fresh = OnlineDataScheduler(scheduler.sources, tokenizer, settings=scheduler.settings)
    fresh.load_state_dict(json.loads(json.dumps(scheduler.state_dict())))
    return iter(fresh)


@pytest.mark.parametrize("version", [1, 2, 3, 4, 7, None])
def test_states_of_another_version_are_refused_naming_both_versions(corpus, tokenizer, version):
    """No state of another version is converted: the message names the version that wrote it and the one read."""
    first = make(corpus, tokenizer)
    for _ in islice(iter(first), 5):
        pass
    state = json.loads(json.dumps(first.state_dict()))
    old = dict(state, version=version) if version is not None else {k: v for k, v in state.items() if k != "version"}
    with pytest.raises(
        ValueError, match=f"written as state version {version}; this wonton_hf reads version {STATE_VERSION} only"
    ):
        make(corpus, tokenizer).load_state_dict(old)
    with pytest.raises(ValueError, match=f"state version {version}"):
        make(corpus, tokenizer).load_state_dict({"ranks": [state, old]})


@pytest.mark.parametrize(("num_workers", "accumulation"), [(0, 1), (2, 3), (3, 2)])
def test_every_window_knows_the_optimizer_step_the_dataloader_gives_it(corpus, tokenizer, num_workers, accumulation):
    scheduler = make(corpus, tokenizer, batch_size=2, gradient_accumulation_steps=accumulation)
    loader = DataLoader(scheduler, batch_size=2, num_workers=num_workers, collate_fn=PackedWindowCollator())
    for index, batch in enumerate(islice(loader, 14)):
        assert batch["data_state"]["step"] == index // accumulation
        scheduler.observe(batch.pop("data_state"))
        assert scheduler.current_step == (index + 1) // accumulation


def test_the_workers_journal_file_is_compacted_without_changing_the_stream(corpus, tokenizer, monkeypatch):
    """Many changes reach two DataLoader workers through the journal file; rewriting it changes nothing."""
    from wonton_hf.data.callbacks import lookahead_steps
    from wonton_hf.data.mixture import JournalChannel

    def run(compact_every):
        monkeypatch.setattr(JournalChannel, "compact_every", compact_every)
        scheduler = make(corpus, tokenizer, batch_size=2, seed=3)
        scheduler.lookahead_steps = lookahead_steps(num_workers=2, prefetch_factor=2, gradient_accumulation_steps=1)
        loader = DataLoader(scheduler, batch_size=2, num_workers=2, collate_fn=PackedWindowCollator())
        rng, out, lines = random.Random(0), [], []
        stream = iter(loader)
        for _ in range(40):
            batch = next(stream)
            scheduler.observe(batch.pop("data_state"))
            scheduler.set_feedback({name: rng.uniform(0.1, 3.0) for name in WEIGHTS})
            out.append(batch["source_ids"])
            with open(scheduler.channel.path) as f:
                lines.append(sum(1 for _ in f))
        del stream
        return out, lines

    compacted, lines = run(4)
    plain, plain_lines = run(10**6)
    assert all(torch.equal(a, b) for a, b in zip(compacted, plain, strict=True))
    assert max(lines) <= 4 + 12 < plain_lines[-1] == 40  # the rewritten file holds the pending changes only


def test_a_reader_that_missed_two_rewrites_still_reads_every_entry(tmp_path):
    """A rewrite is a new file renamed over the old one; ext4 hands the freed inode number back on the next
    rewrite, so after two rewrites between polls the file has the inode the reader knows while its offset
    belongs to another file (it read nothing, or from mid-line: entries lost). Seen as a worker getting a
    mixture change after it had produced windows for that step."""
    from wonton_hf.data.mixture import JournalChannel

    path = str(tmp_path / "journal.jsonl")
    writer, reader = JournalChannel(path), JournalChannel(path)
    entry = lambda seq: {"seq": seq, "step": seq, "kind": "set", "weights": {"en": 1.0}, "reason": "x" * seq}  # noqa: E731
    writer.write_all([entry(0), entry(1), entry(2)])
    assert [e["seq"] for e in reader.poll()] == [0, 1, 2]
    writer.write_all([entry(2), entry(3)])  # two rewrites before the reader polls again
    writer.write_all([entry(4), entry(5), entry(6), entry(7)])
    assert [e["seq"] for e in reader.poll()] == [4, 5, 6, 7]
    writer.append(entry(8))
    assert [e["seq"] for e in reader.poll()] == [8]
