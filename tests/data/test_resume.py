"""Resume: exact (same layout, window for window) and elastic (other world size / workers: no loss, no repeat)."""

from __future__ import annotations

import json
import random
from collections import Counter
from itertools import islice

import pytest
import torch
from torch.utils.data import DataLoader

from wonton_hf.data import DataSource, OnlineDataScheduler, PackedWindowCollator

from .data_fixtures import doc_text

WEIGHTS = {"en": 4, "de": 3, "fr": 2, "zh": 1}
DOCS = {"en": range(200), "de": range(150), "fr": range(100), "zh": range(150)}


def make(corpus, tokenizer, exhaustion="repeat", **kwargs):
    sources = [
        DataSource(name=n, paths=[str(p) for p in corpus[n]], weight=w, exhaustion=exhaustion)
        for n, w in WEIGHTS.items()
    ]
    kwargs.setdefault("seq_len", 64)
    kwargs.setdefault("block_size", 8)
    kwargs.setdefault("batch_size", 2)  # must match the DataLoader: workers derive batches and steps from it
    return OnlineDataScheduler(sources, tokenizer, **kwargs)


def batches(scheduler, num_workers, batch_size=2):
    """Consumes like the Trainer + DataSchedulerCallback: each batch's data_state goes back to the scheduler."""
    loader = DataLoader(scheduler, batch_size=batch_size, num_workers=num_workers, collate_fn=PackedWindowCollator())
    for batch in loader:
        scheduler.observe(batch.pop("data_state"))
        yield batch


def roundtrip(state):
    return json.loads(json.dumps(state))


@pytest.mark.parametrize("seed", range(8))
def test_exact_resume_in_process(corpus, tokenizer, seed):
    rng = random.Random(seed)
    stop, more = rng.randrange(1, 60), 25
    seq_len = 64 if seed % 2 else 256  # 256: long enough to cross epochs (sources repeat with a new shuffle)
    reference = [
        b["input_ids"] for b in islice(batches(make(corpus, tokenizer, seed=seed, seq_len=seq_len), 0), stop + more)
    ]
    first = make(corpus, tokenizer, seed=seed, seq_len=seq_len)
    for _b in islice(batches(first, 0), stop):
        pass
    resumed = make(corpus, tokenizer, seed=seed, seq_len=seq_len)
    resumed.load_state_dict(roundtrip(first.state_dict()))
    after = [b["input_ids"] for b in islice(batches(resumed, 0), more)]
    assert all(torch.equal(a, b) for a, b in zip(after, reference[stop:], strict=True))


@pytest.mark.parametrize("seed,stop", [(0, 3), (1, 8)])
def test_exact_resume_with_two_workers(corpus, tokenizer, seed, stop):
    more = 12
    reference = [b["input_ids"] for b in islice(batches(make(corpus, tokenizer, seed=seed), 2), stop + more)]
    first = make(corpus, tokenizer, seed=seed)
    for _b in islice(batches(first, 2), stop):
        pass
    resumed = make(corpus, tokenizer, seed=seed)
    resumed.load_state_dict(roundtrip(first.state_dict()))
    after = [b["input_ids"] for b in islice(batches(resumed, 2), more)]
    assert all(torch.equal(a, b) for a, b in zip(after, reference[stop:], strict=True))


def expected_tokens(tokenizer) -> dict[int, Counter]:
    out = {}
    for i, (name, ids) in enumerate(DOCS.items()):
        counter = Counter()
        for text in tokenizer([doc_text(name, k) for k in ids], add_special_tokens=False)["input_ids"]:
            counter.update(text + [tokenizer.eos_token_id])
        out[i] = counter
    return out


def consumed_tokens(windows) -> dict[int, Counter]:
    out = {i: Counter() for i in range(len(WEIGHTS))}
    for w in windows:
        for source in range(len(WEIGHTS)):
            out[source].update(w["input_ids"][w["source_ids"] == source].tolist())
    return out


def run_ranks(corpus, tokenizer, world, windows_per_rank, states=None, num_workers=0, **kwargs):
    """Each rank consumes the same number of windows (as ranks do in lockstep); None = until exhausted."""
    consumed, new_states = [], []
    for rank in range(world):
        scheduler = make(
            corpus, tokenizer, exhaustion="stop", rank=rank, world_size=world, seed=11, batch_size=1, **kwargs
        )
        if states is not None:
            scheduler.load_state_dict({"ranks": roundtrip(states)})
        got = []
        for batch in batches(scheduler, num_workers, batch_size=1):
            got.append({k: batch[k][0] for k in ("input_ids", "source_ids")})
            if windows_per_rank is not None and len(got) >= windows_per_rank:
                break
        consumed.extend(got)
        new_states.append(scheduler.state_dict())
    return consumed, new_states


@pytest.mark.parametrize(
    "before,after,workers_before",
    [((2, 37), (1, None), 0), ((1, 53), (3, None), 0), ((2, 21), (3, None), 2), ((3, 9), (2, 15), 0)],
)
def test_elastic_resume_loses_and_repeats_nothing(corpus, tokenizer, before, after, workers_before):
    first, states = run_ranks(corpus, tokenizer, before[0], before[1], num_workers=workers_before)
    second, states = run_ranks(corpus, tokenizer, after[0], after[1], states)
    rest = []
    if after[1] is not None:  # a third layout drains what is left
        rest, _ = run_ranks(corpus, tokenizer, 1, None, states)
    got = consumed_tokens(first + second + rest)
    want = expected_tokens(tokenizer)
    for source in want:
        assert got[source] == want[source], list(WEIGHTS)[source]


def test_ranks_and_workers_read_disjoint_data(corpus, tokenizer):
    windows, _ = run_ranks(corpus, tokenizer, 2, None, num_workers=2)
    got = consumed_tokens(windows)
    assert got == expected_tokens(tokenizer)  # together exactly once each, so no two shards overlapped


def test_a_source_with_fewer_files_than_shards_is_split_evenly(corpus, tokenizer):
    """One block holds all of `de` (150 records in 1 file, block_size 1024): split by blocks, one of 2 shards would
    get all of it; split by records, each gets half (documents emitted per shard, counted from the states)."""
    _, states = run_ranks(corpus, tokenizer, 2, None, block_size=1024)
    documents = {name: [s["roles"]["0"]["documents"][name] for s in states] for name in ("de", "fr", "en", "zh")}
    assert documents == {"de": [75, 75], "fr": [50, 50], "en": [100, 100], "zh": [100, 50]}  # en, zh: whole files


def test_a_source_with_fewer_files_than_shards_is_read_by_few_shards(corpus, tokenizer, monkeypatch):
    """zh (3 files of 50) and en (2 of 100) over 4 shards: each shard opens at most two zh files and one en file
    (not all of them), and still gets its share of the records to one (documents per shard, from the states)."""
    from wonton_hf.data.stream import SourceStream

    opened: dict[tuple[str, int], set[str]] = {}
    file_blocks = SourceStream._file_blocks

    def spy(self, epoch, file_pos, path, *args):
        opened.setdefault((self.source.name, self.shard), set()).add(path)
        return file_blocks(self, epoch, file_pos, path, *args)

    monkeypatch.setattr(SourceStream, "_file_blocks", spy)
    _, states = run_ranks(corpus, tokenizer, 4, None)  # 4 ranks in this process: the spy sees every shard
    documents = {name: sorted(s["roles"]["0"]["documents"][name] for s in states) for name in WEIGHTS}
    assert documents == {"en": [50] * 4, "de": [37, 37, 38, 38], "fr": [25] * 4, "zh": [37, 37, 38, 38]}
    assert sorted(len(opened["zh", shard]) for shard in range(4)) == [1, 1, 2, 2]
    assert all(len(opened["en", shard]) == 1 for shard in range(4))


def test_live_edit_reaches_dataloader_workers_at_the_recorded_step(corpus, tokenizer):
    from wonton_hf.data.callbacks import lookahead_steps

    scheduler = make(corpus, tokenizer, seed=2)
    scheduler.lookahead_steps = lookahead_steps(num_workers=2, prefetch_factor=2, gradient_accumulation_steps=1)
    stream = batches(scheduler, 2)
    before = [next(stream) for _ in range(4)]
    effective = scheduler.set_weights({"en": 0, "de": 1, "fr": 0, "zh": 0})
    assert effective == 4 + scheduler.lookahead_steps
    after = [next(stream) for _ in range(effective - 4 + 6)]
    assert any((b["source_ids"] == 0).any() for b in before + after[: effective - 4])
    stream.close()  # shuts the workers down now rather than at interpreter exit
    for batch in after[effective - 4 :]:  # batch i is step i (no accumulation): from `effective` on, only `de`
        assert (batch["source_ids"] == 1).all()


def test_a_change_that_would_arrive_too_late_fails_loudly(corpus, tokenizer):
    scheduler = make(corpus, tokenizer, seed=2)
    stream = batches(scheduler, 2)
    for _ in range(3):
        next(stream)
    scheduler.set_weights({"en": 0}, step=3)  # workers have already produced batches for step 3 and later
    with pytest.raises(RuntimeError, match="lookahead"):
        for _ in range(10):
            next(stream)
    stream.close()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_torchdata_stateful_dataloader_resumes_exactly(corpus, tokenizer, num_workers):
    """The scheduler's state_dict/load_state_dict are the per-worker hooks StatefulDataLoader calls."""
    stateful = pytest.importorskip("torchdata.stateful_dataloader")

    def loader():
        return stateful.StatefulDataLoader(
            make(corpus, tokenizer, seed=1), batch_size=2, num_workers=num_workers, collate_fn=PackedWindowCollator()
        )

    reference = [b["input_ids"] for b in islice(loader(), 15)]
    first = loader()
    iterator = iter(first)
    for _ in range(5):
        next(iterator)
    state = first.state_dict()
    del iterator
    resumed = loader()
    resumed.load_state_dict(state)
    after = [b["input_ids"] for b in islice(resumed, 10)]
    assert all(torch.equal(a, b) for a, b in zip(after, reference[5:], strict=True))


def test_incompatible_checkpoints_are_refused(corpus, tokenizer):
    scheduler = make(corpus, tokenizer, seed=1)
    list(islice(batches(scheduler, 0), 3))
    state = scheduler.state_dict()
    with pytest.raises(ValueError, match="`seed`"):
        make(corpus, tokenizer, seed=2).load_state_dict(state)
    fewer = {**corpus, "en": corpus["en"][:1]}
    with pytest.raises(ValueError, match="files of source `en` changed"):
        make(fewer, tokenizer, seed=1).load_state_dict(state)


def test_a_replaced_file_is_refused_although_the_count_is_the_same(corpus, tokenizer, tmp_path):
    """Saved with en = [a, b], resumed with en = [a, c]: same number of files, other data behind the positions."""
    scheduler = make(corpus, tokenizer, seed=1)
    list(islice(batches(scheduler, 0), 3))
    state = roundtrip(scheduler.state_dict())
    replacement = tmp_path / "en_other.jsonl.gz"
    replacement.write_bytes(corpus["en"][1].read_bytes())
    replaced = {**corpus, "en": [corpus["en"][0], replacement]}
    assert len(replaced["en"]) == len(corpus["en"])
    with pytest.raises(ValueError, match="files of source `en` changed"):
        make(replaced, tokenizer, seed=1).load_state_dict(state)
    reordered = {**corpus, "en": corpus["en"][::-1]}  # a source sorts its files: the same list, accepted
    make(reordered, tokenizer, seed=1).load_state_dict(state)


def test_elastic_resume_without_all_rank_states_is_refused(corpus, tokenizer):
    _, states = run_ranks(corpus, tokenizer, 2, 5)
    with pytest.raises(ValueError, match="states of all 2 ranks"):
        make(corpus, tokenizer, exhaustion="stop", rank=0, world_size=1, seed=11, batch_size=1).load_state_dict(
            states[0]
        )


def test_exact_resume_under_a_schedule_with_accumulation_and_workers(corpus, tokenizer):
    """Workers derive the optimizer step from their window count; resuming must keep that clock."""
    from wonton_hf.data import WeightSchedule

    schedule = WeightSchedule(
        points=[(0, {"en": 1, "de": 0, "fr": 0, "zh": 0}), (6, {"en": 0, "de": 1, "fr": 1, "zh": 1})],
        interpolation="linear",
    )

    def build():
        return make(corpus, tokenizer, seed=4, schedule=schedule, gradient_accumulation_steps=2)

    reference = [b["input_ids"] for b in islice(batches(build(), 2), 20)]
    first = build()
    for _b in islice(batches(first, 2), 6):  # 3 optimizer steps of 2 batches
        pass
    assert first.current_step == 3
    resumed = build()
    resumed.load_state_dict(roundtrip(first.state_dict()))
    after = [b["input_ids"] for b in islice(batches(resumed, 2), 14)]
    assert all(torch.equal(a, b) for a, b in zip(after, reference[6:], strict=True))


SCHEDULE = {"points": [(0, WEIGHTS), (6, {"en": 1, "de": 1, "fr": 4, "zh": 4})]}


def _stream(corpus, tokenizer, world, num_workers, batches_per_rank, states=None):
    """Per rank, the input_ids of its batches: `world` ranks x `num_workers` DataLoader workers, always 2 shards
    of 2 windows per step (gradient accumulation 2 // world: the same global batch)."""
    out, saved = [], []
    for rank in range(world):
        scheduler = make(
            corpus,
            tokenizer,
            rank=rank,
            world_size=world,
            seed=5,
            gradient_accumulation_steps=2 // world,
            schedule=SCHEDULE,
        )
        if states is not None:
            scheduler.load_state_dict({"ranks": roundtrip(states)})
        out.append([b["input_ids"] for b in islice(batches(scheduler, num_workers), batches_per_rank)])
        saved.append(scheduler.state_dict())
    return out, saved


@pytest.mark.parametrize("before,after", [((2, 0), (1, 2)), ((1, 2), (2, 0))])
def test_a_world_size_change_that_keeps_the_shard_count_continues_the_same_stream(corpus, tokenizer, before, after):
    """2 ranks x 1 shard each <-> 1 rank x 2 DataLoader workers: the old shards are taken over as they stood, so
    every step after the resume holds the same windows as in the uninterrupted run (MosaicML's "canonical
    nodes" in this scheduler's terms); the weight change at step 6 falls on the same batches."""
    steps, more = 4, 6
    (world, workers), (new_world, new_workers) = before, after
    per_rank = lambda w, n: n * 2 // w  # noqa: E731 - batches a rank gives `n` steps (2 batches a step overall)
    reference, _ = _stream(corpus, tokenizer, world, workers, per_rank(world, steps + more))
    _, states = _stream(corpus, tokenizer, world, workers, per_rank(world, steps))
    resumed, _ = _stream(corpus, tokenizer, new_world, new_workers, per_rank(new_world, more), states)

    def by_step(stream, world, skip):  # {step: sorted windows}; a rank's batches in turn make its steps
        out = {}
        for rank_batches in stream:
            for i, batch in enumerate(rank_batches):
                out.setdefault(skip + i * world // 2, []).extend(row.tolist() for row in batch)
        return {step: sorted(rows) for step, rows in out.items()}

    want = {k: v for k, v in by_step(reference, world, 0).items() if k >= steps}
    assert by_step(resumed, new_world, steps) == want
