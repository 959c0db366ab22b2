"""Claim (issue 12): the Online Data Scheduler starts fast, holds memory bounded by tokens, and keeps its mixture
journal at constant size, at the defaults a user gets.

Measured in one process, against baselines run in the same process:
- time to the first window on the shared corpus (8 sources), beside the `datasets` pipeline (streaming
  `load_dataset("json")` per source + `interleave_datasets` + batched `map` + concatenate/cut);
- a long-document source (1,100 documents of ~66 KB, written to a temp dir from the shared corpus): time to the
  first window and resident memory added (RSS, after the first window and the peak over the next windows);
- many sources: 64 sources x 2 DataLoader workers, the resident memory of each worker;
- many sources: the packing thread's CPU per window with 96 sources against 8 (the same 8 files, each under 12
  names), measured in the same run;
- few-file sources at 1,024 ranks x 4 workers (1 to 1,000 files, fewer than the 4,096 shards): files each shard
  opens and records it gets, against state version 3's split, under which every shard opened every file;
- the journal: a simulated 250,000-step run with a feedback change every 10 steps (windows of 16 tokens, so the
  data is cheap and the mixture's own cost shows): per-rank state size and per-step cost, early vs late.

    python benchmarks/data_scheduler_scale.py [--tokenizer bpe8k|wonton|PATH] [--steps 250000]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_scheduler_throughput import LANGUAGES, datasets_stream, get_tokenizer, load_texts  # noqa: E402


def rss() -> int:
    return psutil.Process().memory_info().rss


def first_window_ours(tokenizer, corpus: Path) -> float:
    from wonton_hf.data import DataSource, OnlineDataScheduler

    start = time.perf_counter()
    sources = [DataSource(lang, [str(corpus / f"lo_{lang}.jsonl.gz")]) for lang in LANGUAGES]
    next(iter(OnlineDataScheduler(sources, tokenizer, seq_len=2048)))
    return time.perf_counter() - start


def first_window_datasets(tokenizer, corpus: Path) -> float:
    start = time.perf_counter()
    mixed = datasets_stream(tokenizer, corpus)
    buffer: list[int] = []
    for row in mixed:
        buffer.extend(row["input_ids"])
        if len(buffer) >= 2048:
            break
    return time.perf_counter() - start


def write_books(texts: dict[str, list[str]], path: Path, documents: int = 1100, chars: int = 66_000) -> None:
    pool = [t for lang in LANGUAGES for t in texts[lang]]
    k = 0
    with open(path, "w") as f:
        for _ in range(documents):
            parts, n = [], 0
            while n < chars:
                parts.append(pool[k % len(pool)])
                n += len(parts[-1]) + 1
                k += 1
            f.write(json.dumps({"text": "\n".join(parts)}, ensure_ascii=False) + "\n")


def long_documents(tokenizer, path: Path, windows: int) -> tuple[float, float, float, float]:
    """(first window s, RSS added after it, peak RSS added over `windows` windows, tokens/s over them)."""
    from wonton_hf.data import DataSource, OnlineDataScheduler

    gc.collect()
    base = rss()
    start = time.perf_counter()
    stream = iter(OnlineDataScheduler([DataSource("books", [str(path)])], tokenizer, seq_len=2048))
    next(stream)
    first = time.perf_counter() - start
    after_first = rss() - base
    peak = after_first
    start = time.perf_counter()
    for k, _ in enumerate(islice(stream, windows)):
        if k % 25 == 0:
            peak = max(peak, rss() - base)
    rate = windows * 2048 / (time.perf_counter() - start)
    return first, after_first / 1e6, peak / 1e6, rate


def many_sources(tokenizer, corpus: Path, n_sources: int, batches: int) -> list[tuple[float, float]]:
    """Peak (RSS, USS) in MB of each of 2 DataLoader workers reading `n_sources` sources (the 8 files, repeated).

    RSS counts the pages a forked worker shares with its parent (torch, the tokenizer); USS only its own."""
    from torch.utils.data import DataLoader

    from wonton_hf.data import DataSource, OnlineDataScheduler, PackedWindowCollator

    sources = [
        DataSource(f"s{i}", [str(corpus / f"lo_{LANGUAGES[i % len(LANGUAGES)]}.jsonl.gz")]) for i in range(n_sources)
    ]
    scheduler = OnlineDataScheduler(sources, tokenizer, seq_len=2048, batch_size=8)
    loader = DataLoader(
        scheduler, batch_size=8, num_workers=2, collate_fn=PackedWindowCollator(), persistent_workers=True
    )
    it = iter(loader)
    peaks: dict[int, tuple[int, int]] = {}
    for _ in range(batches):
        next(it)
        for worker in it._workers:
            info = psutil.Process(worker.pid).memory_full_info()
            old = peaks.get(worker.pid, (0, 0))
            peaks[worker.pid] = (max(old[0], info.rss), max(old[1], info.uss))
    del it, loader
    return [(r / 1e6, u / 1e6) for r, u in peaks.values()]


def journal(tokenizer, corpus: Path, steps: int, every: int) -> tuple[int, int, float, float]:
    """(state bytes at 1% of the run, at the end, seconds per step over the first and the last 5,000 steps)."""
    import random

    from wonton_hf.data import DataSource, OnlineDataScheduler

    sources = [DataSource(lang, [str(corpus / f"lo_{lang}.jsonl.gz")]) for lang in LANGUAGES]
    scheduler = OnlineDataScheduler(sources, tokenizer, seq_len=16)
    rng = random.Random(0)
    stream = iter(scheduler)
    marks, sizes, stamps = {steps // 100, steps - 1}, {}, {}
    for step in range(steps):
        if step in (0, 5_000, steps - 5_000, steps - 1):
            stamps[step] = time.perf_counter()
        next(stream)  # in process: the scheduler observes each window as it is consumed
        if step % every == 0:
            scheduler.set_feedback({lang: rng.uniform(0.5, 2.0) for lang in LANGUAGES})
        if step in marks:
            sizes[step] = len(json.dumps(scheduler.state_dict()))
    early = (stamps[5_000] - stamps[0]) / 5_000
    late = (stamps[steps - 1] - stamps[steps - 5_000]) / 4_999
    return sizes[steps // 100], sizes[steps - 1], early, late


def packing_cost(tokenizer, corpus: Path, copies: int, windows: int = 1200) -> float:
    """CPU of the packing thread (the iterating one: picking sources, cutting segments, filling windows, the
    snapshot; encoding runs in the read-ahead thread) per 2048-token window, over `8 * copies` sources (each
    language file under `copies` names), after 300 windows of warm-up."""
    from wonton_hf.data import DataSource, OnlineDataScheduler

    sources = [
        DataSource(name=f"{lang}{k}", paths=[str(corpus / f"lo_{lang}.jsonl.gz")])
        for lang in LANGUAGES
        for k in range(copies)
    ]
    stream = iter(OnlineDataScheduler(sources, tokenizer, seq_len=2048, batch_size=8))
    for _ in islice(stream, 300):
        pass
    start = time.thread_time()
    for _ in islice(stream, windows):
        pass
    return (time.thread_time() - start) / windows


def few_files(
    num_shards: int, num_files: int, records: int = 3 * 1024, block_size: int = 1024
) -> tuple[int, int, int, int]:
    """A source of `num_files` files of `records` each over `num_shards` shards: (files the busiest shard opens,
    file reads in all, its fewest and most records). Computed from the split itself (`layout.owner`/`readers`),
    as every shard of a job would: what a shard reads is what it opens, whatever the storage."""
    from collections import Counter

    from wonton_hf.data.layout import owner, readers

    opened: Counter[int] = Counter()
    share: Counter[int] = Counter()
    for file_pos in range(num_files):
        opened.update(readers(num_shards, num_files, file_pos))
        share.update(
            owner(num_shards, num_files, file_pos, i // block_size, i % block_size, block_size) for i in range(records)
        )
    counts = [share[s] for s in range(num_shards)]
    return max(opened.values()), sum(opened.values()), min(counts), max(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parents[2] / "shared"
    parser.add_argument("--corpus", default=str(root / "corpus"))
    parser.add_argument("--reference", default=str(root / "reference"))
    parser.add_argument("--tokenizer", default="bpe8k", help="bpe8k (trained here, not timed), wonton, or a path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=250_000, help="steps of the journal simulation; 0 skips it")
    parser.add_argument(
        "--skip", default="", help="comma-separated parts to skip: first,long,many,sources,files,journal"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--books", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    corpus = Path(args.corpus)
    skip = set(filter(None, args.skip.split(",")))
    if args.child is not None:
        return child(args)
    texts = load_texts(corpus)
    tokenizer = get_tokenizer(args.tokenizer, texts, Path(args.reference))
    tokenizer.model_max_length = 10**9
    saved = tempfile.TemporaryDirectory()
    tokenizer.save_pretrained(saved.name)
    print(f"tokenizer {args.tokenizer} (vocab {len(tokenizer)}); defaults: block_size 1024, prefetch_blocks 1")
    if "first" not in skip:
        ours, theirs = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same load
            theirs.append(first_window_datasets(tokenizer, corpus))
            ours.append(first_window_ours(tokenizer, corpus))
        o, t = sorted(ours)[len(ours) // 2], sorted(theirs)[len(theirs) // 2]
        print(f"shared corpus, 8 sources, first 2048-token window: ours {o:.2f} s, datasets {t:.2f} s = {o / t:.2f}x")
    # Memory is measured in fresh processes: freed memory stays in this one's heap and would hide what is added.
    if "long" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "books.jsonl"
            write_books(texts, path)
            first, added, peak, rate = spawn(args, saved.name, "long", "--books", str(path))
            print(
                f"long documents ({path.stat().st_size / 1e6:.0f} MB jsonl, 1,100 x ~66 KB): first window {first:.2f} s, "
                f"RSS +{added:.0f} MB after it, peak +{peak:.0f} MB over 300 windows ({rate:,.0f} tok/s)"
            )
    if "many" not in skip:
        peaks = spawn(args, saved.name, "many")
        print(
            "64 sources x 2 DataLoader workers, peak per worker: "
            + ", ".join(f"RSS {r:.0f} MB (USS {u:.0f} MB)" for r, u in peaks)
        )
    if "sources" not in skip:
        few, many = [], []
        for _ in range(args.repeats):
            few.append(packing_cost(tokenizer, corpus, 1))
            many.append(packing_cost(tokenizer, corpus, 12))
        f, m = sorted(few)[len(few) // 2], sorted(many)[len(many) // 2]
        print(f"packing thread CPU per window: 8 sources {f * 1e3:.2f} ms, 96 sources {m * 1e3:.2f} ms = {m / f:.2f}x")
    if "files" not in skip:
        # Baseline: state version 3 gave record i of block b of file f to shard (f + b + i) mod shards, so every
        # shard opened every file (num_files each, num_shards * num_files reads in all).
        for num_files in (1, 10, 100, 1000):
            most, total, low, high = few_files(4096, num_files)
            print(
                f"1,024 ranks x 4 workers, a source of {num_files:,} files x 3,072 records: the busiest shard opens "
                f"{most} (version 3: {num_files:,}), {total:,} file reads in all ({total / (4096 * num_files):.3f}x "
                f"version 3's {4096 * num_files:,}), {low}-{high} records a shard"
            )
    if "journal" not in skip and args.steps:
        small, large, early, late = journal(tokenizer, corpus, args.steps, 10)
        print(
            f"journal, {args.steps:,} steps, feedback every 10: state {small:,} bytes at 1% of the run, {large:,} at "
            f"the end; per step {early * 1e6:.0f} us over the first 5,000 steps, {late * 1e6:.0f} us over the last "
            f"5,000 ({late / early:.2f}x)"
        )


def spawn(args, tokenizer_dir: str, part: str, *extra: str):
    """Runs one memory measurement in a fresh process; returns what it printed last (JSON)."""
    import subprocess

    command = [sys.executable, __file__, "--child", part, "--tokenizer", tokenizer_dir, "--corpus", args.corpus, *extra]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def child(args) -> None:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(args.tokenizer)
    tokenizer.model_max_length = 10**9
    import wonton_hf.data  # noqa: F401  (imports are not what the scheduler adds)

    if args.child == "long":
        print(json.dumps(long_documents(tokenizer, Path(args.books), 300)))
    elif args.child == "many":
        print(json.dumps(many_sources(tokenizer, Path(args.corpus), 64, 40)))


if __name__ == "__main__":
    main()
