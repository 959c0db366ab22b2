"""The data stream across a world-size change, through the real launcher (pretrain_driver.py: `build_trainer` +
`run`, as examples/pretrain.py): a run on 2 processes killed in step 7 (after checkpoints 3 and 6; its record of
steps 1-7 is the uninterrupted run's), whose checkpoint-3 is resumed on 1 process twice:
- without DataLoader workers (1 shard instead of 2) until its finite sources run dry: every token of every
  document is trained exactly once over the two runs (none twice, none skipped; exact integer token counts per
  source against the corpus tokenized by the run's own tokenizer), the step, the tokens seen (a schedule in
  tokens), the data counters and SpikeGuard's state (the only monitor that keeps state between steps) carry
  over; which windows make up a step is not the uninterrupted run's, so losses differ after the resume;
- with 2 DataLoader workers (2 shards, as before): the same windows in every step as the uninterrupted run, and
  the same losses up to float summation order.
"""

import json
import os
import random
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from transformers import AutoTokenizer

from tests.launch import free_port, run_process_group
from tests.training.test_pretrain import DEMO, DRIVER, ROOT

# name: (files, documents per file); "c" has fewer files than the 2 ranks, so its records are split one by one
CORPUS = {"a": (2, 30), "b": (1, 50), "c": (1, 25)}  # ~5,000 tokens: ~10 steps of 512
WEIGHTS = {"a": 0.5, "b": 0.3, "c": 0.2}
LATER = {"a": 0.2, "b": 0.3, "c": 0.5}  # from 2,560 tokens (step 6): after the resume, counted in tokens seen
SYLLABLES = "ka lo mi nu re sa ti vo we ya zu pe".split()


def _write_corpus(folder: Path) -> dict[str, list[str]]:
    rng = random.Random(7)
    texts = {}
    for name, (files, per_file) in CORPUS.items():
        texts[name] = []
        for f in range(files):
            docs = [
                " ".join("".join(rng.choices(SYLLABLES, k=rng.randint(1, 3))) for _ in range(rng.randint(10, 40)))
                for _ in range(per_file)
            ]
            (folder / f"{name}{f}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
            texts[name] += docs
    return texts


def _config(corpus: Path, folder: Path) -> Path:
    config = yaml.safe_load(DEMO.read_text())
    config["data"] = {
        "seq_len": 64,
        "block_size": 8,
        "sources": [
            {"name": n, "paths": [str(corpus / f"{n}*.jsonl")], "weight": w, "exhaustion": "stop"}
            for n, w in WEIGHTS.items()
        ],
        "schedule": {"unit": "tokens", "points": [{"at": 0, "weights": WEIGHTS}, {"at": 2560, "weights": LATER}]},
    }
    config["tokenizer"] = {"vocab_size": 512, "max_documents_per_source": 30}
    config["optimizer"]["warmup_steps"] = 2
    config["train"].update(
        max_steps=40,  # more than the data holds: the resumed run ends when the sources run dry
        per_device_batch_size=4,
        global_batch_tokens=512,  # 2 processes x 4 windows x 64 tokens; 1 process accumulates 2
        logging_steps=1,
        save_steps=3,
        save_total_limit=None,
        report_to=[],
    )
    config["evaluation"] = None
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _drive(processes: int, config: Path, out: Path, record: Path, *options: str, overrides: tuple = ()) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "DS_ACCELERATOR": "cpu"}
    if not any(o.startswith("train.deepspeed=") for o in overrides):
        env["ACCELERATE_USE_CPU"] = "true"  # gloo DDP; under DeepSpeed the launcher opens the process group itself
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
    command = [*launcher, "--master_port", str(free_port()), str(DRIVER), *options, f"--record={record}"]
    command += [str(config), f"output_dir={out}", *overrides]
    result = run_process_group(command, env=env, cwd=ROOT, timeout=500, merge_output=True, what="run hung")
    if not any(option.startswith("--kill-at") for option in options):
        assert result.returncode == 0, result.stdout[-4000:]
    return result.stdout


def _trained(record: Path, ranks: int, up_to: int | None = None) -> tuple[dict[int, Counter], set[int]]:
    """Token counts per source index of the recorded micro-batches (padding excluded), and the steps seen."""
    counts: dict[int, Counter] = {i: Counter() for i in range(len(CORPUS))}
    steps = set()
    for rank in range(ranks):
        for line in (record / f"windows-rank{rank}.jsonl").read_text().splitlines():
            batch = json.loads(line)
            if up_to is not None and batch["step"] > up_to:
                continue
            steps.add(batch["step"])
            for ids, sources in zip(batch["input_ids"], batch["source_ids"], strict=True):
                for token, source in zip(ids, sources, strict=True):
                    if source >= 0:
                        counts[source][token] += 1
    return counts, steps


def _rows_by_step(record: Path, ranks: int, steps: range) -> dict[int, list[list[int]]]:
    """The windows (input_ids rows) of each step, sorted: a step's content, whichever rank or micro-batch held them."""
    out: dict[int, list[list[int]]] = {step: [] for step in steps}
    for rank in range(ranks):
        for line in (record / f"windows-rank{rank}.jsonl").read_text().splitlines():
            batch = json.loads(line)
            if batch["step"] in out:
                out[batch["step"]].extend(batch["input_ids"])
    return {step: sorted(rows) for step, rows in out.items()}


def _losses(history: list[dict]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in history if "loss" in e}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The corpus, and a 2-process run killed in step 7 (SIGKILL: no cleanup) after checkpoints 3 and 6; its
    record of steps 1-7 is what an uninterrupted run trains."""
    root = tmp_path_factory.mktemp("elastic_data")
    corpus = root / "corpus"
    corpus.mkdir()
    texts = _write_corpus(corpus)
    config = _config(corpus, root)
    killed = _drive(2, config, root / "first", root / "rec-first", "--kill-at=7")
    first = root / "first" / "pretrain-demo"
    assert (first / "checkpoint-6" / "COMPLETE").is_file(), killed[-4000:]
    assert json.loads((first / "checkpoint-3" / "COMPLETE").read_text())["world_size"] == 2
    return {"root": root, "texts": texts, "config": config, "first": first}


def _resume_on_one(runs, name: str, *options: str, overrides: tuple = (), first: Path | None = None):
    """`first`'s checkpoint-3 resumed on 1 process in a directory of its own (with `first`'s tokenizer, as
    `resume: auto` in the same directory would); returns the run directory and the output."""
    root, first = runs["root"], first or runs["first"]
    resumed = root / name / "pretrain-demo"
    resumed.mkdir(parents=True)
    shutil.copytree(first / "checkpoint-3", resumed / "checkpoint-3")
    shutil.copytree(first / "tokenizer", resumed / "tokenizer")
    output = _drive(1, runs["config"], root / name, root / f"rec-{name}", *options, overrides=overrides)
    assert "World size changed (2 -> 1)" in output
    return resumed, output


def test_two_to_one_process_resume_trains_every_document_token_exactly_once(runs):
    tmp_path, texts, first, checkpoint = runs["root"], runs["texts"], runs["first"], runs["first"] / "checkpoint-3"
    resumed, _ = _resume_on_one(runs, "resumed")  # 1 process, no DataLoader worker: another shard layout

    # Every token of every document trained exactly once: steps 1-3 on 2 ranks, then the rest on 1 rank. The
    # Trainer does not apply a last accumulation the stream could not fill (a finite IterableDataset): those
    # micro-batches (fewer than the 2 of a step on 1 process) were forwarded but are not trained, and are
    # counted apart.
    end = json.loads((tmp_path / "rec-resumed" / "end-rank0.json").read_text())
    last = end["global_step"]
    tokenizer = AutoTokenizer.from_pretrained(first / "tokenizer")
    before, steps_before = _trained(tmp_path / "rec-first", 2, up_to=3)
    after, steps_after = _trained(tmp_path / "rec-resumed", 1, up_to=last)
    everything, steps_forwarded = _trained(tmp_path / "rec-resumed", 1)
    assert steps_before == {1, 2, 3} and steps_after == set(range(4, last + 1))  # the step carried over
    assert 7 < last < 40 and steps_forwarded - steps_after <= {last + 1}  # ended when the data did
    for index, name in enumerate(CORPUS):
        want = Counter()
        for ids in tokenizer(texts[name], add_special_tokens=False)["input_ids"]:
            want.update(ids + [tokenizer.eos_token_id])
        assert before[index] and after[index], name  # the source was trained on in both layouts
        untrained = everything[index] - after[index]
        assert before[index] + after[index] + untrained == want, name  # none twice, none skipped

    losses = [e for e in end["log_history"] if "loss" in e]  # steps 1-3 come from the checkpoint's trainer state
    assert [e["step"] for e in losses] == list(range(1, last + 1))
    # The schedule in tokens seen carried over: 512 tokens a step on 2 and on 1 process, so the switch at 2,560
    # tokens is the batches of step 6 (global_step 6 logs them) in the resumed run too.
    for event in losses:
        weights = LATER if event["step"] >= 6 else WEIGHTS
        assert {n: event[f"data/weight/{n}"] for n in CORPUS} == pytest.approx(weights), event["step"]
    # The data report's counters (carried from the old layout's ranks) agree with the tokens the model received.
    report = json.loads((resumed / "data_report.json").read_text())
    for index, name in enumerate(CORPUS):
        assert report["sources"][name]["tokens"] == (before[index] + everything[index]).total(), name
        assert report["sources"][name]["documents"] == len(texts[name]), name

    # SpikeGuard's window of recent losses arrives as saved on 2 processes.
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["SpikeGuard"]
    begin = json.loads((tmp_path / "rec-resumed" / "begin-rank0.json").read_text())
    assert begin["global_step"] == 3
    assert begin["spike_guard"] == saved["attributes"]["guard_state"] and len(begin["spike_guard"]["losses"]) == 3

    # Not the uninterrupted stream (1 shard now, 2 before): which windows make up a step changed.
    after_resume = _rows_by_step(tmp_path / "rec-resumed", 1, range(4, 8))
    assert after_resume != _rows_by_step(tmp_path / "rec-first", 2, range(4, 8))


def test_one_process_with_two_workers_continues_the_uninterrupted_stream(runs):
    """2 ranks x 0 workers -> 1 rank x 2 DataLoader workers keeps the 2 shards: every step after the resume holds
    the uninterrupted run's windows, and its losses follow the uninterrupted run's. Tolerance 1e-4 on losses
    of ~6: the 1-process run sums the same rows' gradients in another order (float32, ~1e-6 relative); another
    stream moves the loss by ~1e-1 (5.44 against 5.35 at step 4 in the demo)."""
    root, first = runs["root"], runs["first"]
    resumed, output = _resume_on_one(runs, "workers", "--kill-at=7", overrides=("data.num_workers=2",))
    assert "the same 2 shards continue where they stood" in output
    steps = range(4, 8)
    assert _rows_by_step(root / "rec-workers", 1, steps) == _rows_by_step(root / "rec-first", 2, steps)
    reference = _losses(json.loads((first / "checkpoint-6" / "trainer_state.json").read_text())["log_history"])
    losses = _losses(json.loads((resumed / "checkpoint-6" / "trainer_state.json").read_text())["log_history"])
    assert sorted(losses) == list(range(1, 7))
    for step in (4, 5, 6):
        assert losses[step] == pytest.approx(reference[step], abs=1e-4), step


@pytest.mark.slow  # two DeepSpeed launches (~45 s each on 2 shared cores)
def test_zero2_two_to_one_process_with_two_workers_continues_the_uninterrupted_run(runs):
    """The same through DeepSpeed ZeRO-2 (the universal checkpoint re-slices the optimizer for 1 process): the
    resumed run's losses and its weights at step 6 are the uninterrupted 2-process run's (1e-4 and 1e-5, as
    above and in test_world_size_change.py)."""
    root = runs["root"]
    deepspeed = f"train.deepspeed={ROOT / 'examples' / 'configs' / 'deepspeed' / 'zero2.json'}"
    killed = _drive(2, runs["config"], root / "ds-first", root / "rec-ds-first", "--kill-at=7", overrides=(deepspeed,))
    first = root / "ds-first" / "pretrain-demo"
    assert (first / "checkpoint-6" / "COMPLETE").is_file(), killed[-4000:]
    resumed, output = _resume_on_one(
        runs, "ds-workers", "--kill-at=7", overrides=(deepspeed, "data.num_workers=2"), first=first
    )
    assert "through DeepSpeed's universal checkpoint" in output and "the same 2 shards continue" in output
    steps = range(4, 8)
    assert _rows_by_step(root / "rec-ds-workers", 1, steps) == _rows_by_step(root / "rec-ds-first", 2, steps)
    reference = _losses(json.loads((first / "checkpoint-6" / "trainer_state.json").read_text())["log_history"])
    losses = _losses(json.loads((resumed / "checkpoint-6" / "trainer_state.json").read_text())["log_history"])
    for step in (4, 5, 6):
        assert losses[step] == pytest.approx(reference[step], abs=1e-4), step
    ref, res = (load_file(str(run / "checkpoint-6" / "model.safetensors")) for run in (first, resumed))
    assert max((ref[k] - res[k]).abs().max().item() for k in ref) < 1e-5
