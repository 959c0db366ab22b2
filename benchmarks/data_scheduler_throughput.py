"""Claim: the Online Data Scheduler streams packed windows at (nearly) the speed of tokenization itself,
at least as fast as a `datasets` streaming pipeline that does less, packs at >= 99.9% efficiency, and keeps
each source's token share within 1% (relative) of its weight after a few hundred windows.

Baselines, measured in this run on the same texts with the same tokenizer:
- the limit: the tokenizer's plain batched encode (`encode_batch_fast`), tokenizer threads off and on, in the
  main thread and (threads off) in a second thread, where the same loop runs faster (`limit_in_thread`);
- the ceiling of 2 DataLoader workers: that loop in 2 forked processes at once, each in a second thread
  (`limit_processes`), so the worker scaling can be read against what the cores allow;
- `datasets`: `load_dataset("json", streaming=True)` per source + `interleave_datasets` + batched `map`
  tokenisation + naive packing (concatenate, cut every seq_len) — no resume state, no token sources,
  no position resets, no exact shares.

    python benchmarks/data_scheduler_throughput.py [--corpus ../shared/corpus] [--tokenizer wonton|trained|PATH]

The tokenizer is by default the original Wonton tokenizer (139,776 pieces, `../shared/reference`), converted by
`wonton_hf.tokenization`; `--tokenizer trained` trains a 32k BPE with the project's trainer on the corpus first
(not timed). The per-token work of the pipeline is fixed, so the faster the tokenizer, the lower the ratios to
its own encode: the trained BPE encodes about 1.7x faster than the Wonton tokenizer on this corpus. Tokens/s count
real tokens (EOS included) of one full pass over all sources, from the first batch (or row) on: this is the steady
rate, start-up and the first window are `data_scheduler_scale.py`'s. Every figure is the median over `--repeats`
rounds, ratios are taken within each round.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import time
from pathlib import Path

import torch

LANGUAGES = ("en", "de", "fr", "es", "it", "zh", "ja", "ko")
MAP_BATCH = 1000
"""Rows per batched `map` call of the `datasets` baseline."""
PAPER_MIX = {"en": 80.1, "zh": 6.3, "ja": 6.3, "de": 1.6, "fr": 1.5, "it": 1.4, "ko": 1.4, "es": 1.4}


def load_texts(corpus: Path) -> dict[str, list[str]]:
    out = {}
    for lang in LANGUAGES:
        with gzip.open(corpus / f"lo_{lang}.jsonl.gz", "rt", encoding="utf-8") as f:
            out[lang] = [json.loads(line)["text"] for line in f]
    return out


def bpe8k(texts: dict[str, list[str]]):
    """A fast byte-level BPE of 8k pieces trained on the corpus with `tokenizers` (not timed)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=8000,
        special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([t for docs in texts.values() for t in docs], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", bos_token="<s>")


def get_tokenizer(spec: str, texts: dict[str, list[str]], reference: Path):
    """`wonton` (the original Wonton tokenizer converted), `trained` (a 32k BPE from the project's trainer,
    trained here on the corpus, not timed), `bpe8k` (a plain byte-level 8k BPE, the fast tokenizer of issue 12),
    or a tokenizer.json / saved tokenizer directory."""
    from transformers import PreTrainedTokenizerFast

    if spec == "bpe8k":
        return bpe8k(texts)
    if spec == "wonton":
        from wonton_hf.tokenization.sentencepiece import convert_sentencepiece

        model = reference / "nyonic-tokenizer-v1"
        if not (model / "tokenizer.model").is_file():
            raise FileNotFoundError(f"{model}/tokenizer.model not found; pass --reference DIR or --tokenizer trained")
        return convert_sentencepiece(model)
    if spec == "trained":
        from wonton_hf.tokenization import train_tokenizer

        return train_tokenizer(texts=[t for docs in texts.values() for t in docs], vocab_size=32000).tokenizer
    if spec.endswith(".json"):
        return PreTrainedTokenizerFast(tokenizer_file=spec)
    return PreTrainedTokenizerFast.from_pretrained(spec)


def set_threads(on: bool) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if on else "false"


def limit(tokenizer, texts: list[str]) -> tuple[float, int]:
    backend = tokenizer.backend_tokenizer
    backend.encode_batch_fast(texts[:256], add_special_tokens=False)  # warm-up
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(texts), 1024):
        tokens += sum(len(e.ids) + 1 for e in backend.encode_batch_fast(texts[i : i + 1024], add_special_tokens=False))
    return tokens / (time.perf_counter() - start), tokens


def limit_in_thread(tokenizer, texts: list[str]) -> float:
    """The same loop run in a second thread. The Rust encoder allocates a lot, and glibc gives a thread other
    than the main one its own malloc arena, away from the Python heap: depending on the heap's state the loop
    runs up to 40% faster there (15-20% with the fast BPE, 30-40% with the Wonton tokenizer, in a small script
    that loads the corpus; about 1x in this script, whose heap is bigger). The pipeline's read-ahead thread
    encodes in such a thread, so this limit is printed too."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(limit, tokenizer, texts).result()[0]


def _limit_in_child(tokenizer, texts: list[str], barrier, results) -> None:
    from concurrent.futures import ThreadPoolExecutor

    barrier.wait()  # the processes encode at the same time, as DataLoader workers do
    with ThreadPoolExecutor(1) as pool:
        rate, tokens = pool.submit(limit, tokenizer, texts).result()
    end = time.perf_counter()
    results.put((end - tokens / rate, end, tokens))  # the span `limit` timed (after its warm-up)


def limit_processes(tokenizer, texts: list[str], processes: int = 2) -> float:
    """The plain encode loop in `processes` forked processes at once (each over every `processes`-th text, in a
    second thread as a worker's read-ahead thread encodes, tokenizer threads off): what that many DataLoader
    workers could reach on this machine if they did nothing but encode. The worker scaling is bounded by this
    over the one-worker rate, and a worker with read-ahead already uses more than one core (its packing thread
    runs beside its tokenizer thread), so on 2 cores that bound sits well under 2x."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # as the DataLoader starts its workers on Linux
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    children = [
        ctx.Process(target=_limit_in_child, args=(tokenizer, texts[i::processes], barrier, results))
        for i in range(processes)
    ]
    for child in children:
        child.start()
    spans = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join()
    return sum(tokens for _, _, tokens in spans) / (max(end for _, end, _ in spans) - min(s for s, _, _ in spans))


def scheduler_pass(
    tokenizer, corpus: Path, seq_len: int, workers: int, prefetch_blocks: int = 1
) -> tuple[float, float]:
    """One full pass (every source `stop`s when read): (real tokens/s, packing efficiency)."""
    from torch.utils.data import DataLoader

    from wonton_hf.data import DataSource, OnlineDataScheduler, PackedWindowCollator

    sources = [
        DataSource(name=lang, paths=[str(corpus / f"lo_{lang}.jsonl.gz")], exhaustion="stop") for lang in LANGUAGES
    ]
    scheduler = OnlineDataScheduler(sources, tokenizer, seq_len=seq_len, batch_size=8, prefetch_blocks=prefetch_blocks)
    loader = DataLoader(scheduler, batch_size=8, num_workers=workers, collate_fn=PackedWindowCollator())
    start = None
    real = positions = steady = 0
    for batch in loader:
        scheduler.observe(batch["data_state"])
        tokens = int((batch["source_ids"] >= 0).sum())
        real += tokens
        positions += batch["source_ids"].numel()
        # The steady rate, from the first batch on (start-up is data_scheduler_scale.py's); what the sources
        # tokenized ahead before it (their first batches, about 2% of the pass) is counted as steady work.
        if start is None:
            start = time.perf_counter()
        else:
            steady += tokens
    return steady / (time.perf_counter() - start), real / positions


def datasets_stream(tokenizer, corpus: Path, **interleave: object):
    """The baseline pipeline up to tokens: `load_dataset(..., streaming=True)` per source, `interleave_datasets`,
    batched `map` tokenisation with an EOS per document (also the first-window baseline of data_scheduler_scale.py)."""
    import datasets
    from datasets import interleave_datasets, load_dataset

    datasets.disable_progress_bars()
    streams = [
        load_dataset("json", data_files=str(corpus / f"lo_{lang}.jsonl.gz"), split="train", streaming=True)
        for lang in LANGUAGES
    ]
    eos = tokenizer.eos_token_id

    def tokenize(batch):
        return {"input_ids": [ids + [eos] for ids in tokenizer(batch["text"], add_special_tokens=False)["input_ids"]]}

    mixed = interleave_datasets(streams, seed=0, **interleave)
    return mixed.map(tokenize, batched=True, batch_size=MAP_BATCH, remove_columns=["id", "lang", "text"])


def datasets_pass(tokenizer, corpus: Path, seq_len: int) -> float:
    """Steady rate, timed from the first row on; the first row comes with a whole `map` batch (1,000 rows)
    tokenized, so only the tokens of later rows are counted (tokenized while the clock runs)."""
    mixed = datasets_stream(tokenizer, corpus, stopping_strategy="all_exhausted_without_replacement")
    rows = enumerate(mixed)
    _, first = next(rows)
    buffer: list[int] = list(first["input_ids"])
    start = time.perf_counter()
    tokens = 0
    for k, row in rows:
        buffer.extend(row["input_ids"])
        if k >= MAP_BATCH:
            tokens += len(row["input_ids"])
        while len(buffer) >= seq_len:
            buffer = buffer[seq_len:]
    return tokens / (time.perf_counter() - start)


def share_accuracy(
    tokenizer, corpus: Path, weights: dict[str, float], seq_len: int, windows: int, share_tolerance: float | None
) -> tuple[float, int, float]:
    """(max relative share error after 300 windows, first window after which every source stays within 1%,
    share of segments cut mid-window to keep the shares, i.e. not at an EOS or a window end)."""
    from wonton_hf.data import DataSource, OnlineDataScheduler

    sources = [DataSource(name=n, paths=[str(corpus / f"lo_{n}.jsonl.gz")], weight=w) for n, w in weights.items()]
    scheduler = OnlineDataScheduler(sources, tokenizer, seq_len=seq_len, share_tolerance=share_tolerance)
    total_w = sum(weights.values())
    targets = [w / total_w for w in weights.values()]
    counts = [0] * len(weights)
    worst_after_300, last_bad, segments, cuts = 0.0, 0, 0, 0
    for k, item in zip(range(1, windows + 1), scheduler, strict=False):
        for i, c in enumerate(item["source_ids"].bincount(minlength=len(weights)).tolist()[: len(weights)]):
            counts[i] += c
        error = max(abs(c / (k * seq_len) - t) / t for c, t in zip(counts, targets, strict=True))
        if error > 0.01:
            last_bad = k
        if k >= 300:
            worst_after_300 = max(worst_after_300, error)
        ends = torch.nonzero(item["position_ids"][1:] == 0).flatten()  # last token of every segment but the final one
        segments += len(ends) + 1
        cuts += int((item["input_ids"][ends] != tokenizer.eos_token_id).sum())
    return worst_after_300, last_bad + 1, cuts / segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(Path(__file__).resolve().parents[2] / "shared" / "corpus"))
    parser.add_argument(
        "--tokenizer",
        default="wonton",
        help="wonton (the original Wonton tokenizer, converted; default), trained (a 32k BPE trained here), bpe8k, "
        "or a tokenizer.json / saved tokenizer directory",
    )
    parser.add_argument("--reference", default=str(Path(__file__).resolve().parents[2] / "shared" / "reference"))
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--share-windows", type=int, default=2000, help="windows of the share measurement; 0 skips it")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of all measurements; medians are reported")
    args = parser.parse_args()
    corpus = Path(args.corpus)
    if not (corpus / "lo_en.jsonl.gz").is_file():
        raise FileNotFoundError(f"corpus not found in {corpus}; pass --corpus DIR with lo_<lang>.jsonl.gz files")
    texts = load_texts(corpus)
    all_texts = [t for lang in LANGUAGES for t in texts[lang]]
    tokenizer = get_tokenizer(args.tokenizer, texts, Path(args.reference))
    tokenizer.model_max_length = 10**9  # we pack ourselves; silence the per-sequence length warning
    print(
        f"corpus: {len(all_texts)} documents, {sum(map(len, all_texts)) / 1e6:.1f} M characters; tokenizer "
        f"{args.tokenizer}, vocab {len(tokenizer)}"
    )

    # Rounds interleave every measurement, and ratios are taken within a round: on a shared machine the load
    # changes from minute to minute, and a ratio of two runs seconds apart is far steadier than either figure.
    # The speed of this shared machine drifts by +-20% within a minute, so every pass is bracketed by two
    # measurements of the limit (threads off) and compared with their mean; passes are compared with each
    # other through those normalised figures, and the medians over rounds are reported.
    passes = {
        "scheduler_0": lambda: scheduler_pass(tokenizer, corpus, args.seq_len, 0),
        "scheduler_1": lambda: scheduler_pass(tokenizer, corpus, args.seq_len, 1),
        "scheduler_2": lambda: scheduler_pass(tokenizer, corpus, args.seq_len, 2),
        # without the read-ahead thread: one core per worker, to see the worker split scale
        "scheduler_0_sync": lambda: scheduler_pass(tokenizer, corpus, args.seq_len, 0, prefetch_blocks=0),
        "scheduler_1_sync": lambda: scheduler_pass(tokenizer, corpus, args.seq_len, 1, prefetch_blocks=0),
        "scheduler_2_sync": lambda: scheduler_pass(tokenizer, corpus, args.seq_len, 2, prefetch_blocks=0),
        "datasets": lambda: (datasets_pass(tokenizer, corpus, args.seq_len), None),
    }
    rounds: list[dict[str, float]] = []
    efficiency = 0.0
    for _ in range(args.repeats):
        r: dict[str, float] = {}
        set_threads(True)
        r["limit_on"], n_tokens = limit(tokenizer, all_texts)
        set_threads(False)  # a DataLoader worker is one process: the rest runs the tokenizer single-threaded
        r["limit_thread"] = limit_in_thread(tokenizer, all_texts)
        r["limit_2proc"] = limit_processes(tokenizer, all_texts, 2)
        before, _ = limit(tokenizer, all_texts)
        limits = [before]
        for key, run in passes.items():
            r[key], packed = run()
            efficiency = packed if packed is not None else efficiency
            after, _ = limit(tokenizer, all_texts)
            limits.append(after)
            r[f"{key}/limit"] = r[key] / ((before + after) / 2)
            before = after
        r["limit_off"] = statistics.median(limits)
        rounds.append(r)

    def ratio(a: str, b: str) -> float:
        if b == "limit_off":
            return statistics.median(r[f"{a}/limit"] for r in rounds)
        if b in ("limit_on", "limit_thread", "limit_2proc"):
            return statistics.median(r[a] / r[b] for r in rounds)
        return statistics.median(r[f"{a}/limit"] / r[f"{b}/limit"] for r in rounds)

    def tps(a: str) -> float:
        return statistics.median(r[a] for r in rounds)

    print(f"{args.repeats} rounds, medians; {n_tokens:,} tokens per pass")
    print(
        f"limit, plain encode_batch_fast: {tps('limit_off'):,.0f} tok/s (threads off), {tps('limit_on'):,.0f} tok/s "
        f"(threads on), {tps('limit_thread'):,.0f} tok/s (threads off, run in a second thread: "
        f"{statistics.median(r['limit_thread'] / r['limit_off'] for r in rounds):.2f}x the main thread); "
        f"in 2 processes at once (each in a second thread): {tps('limit_2proc'):,.0f} tok/s = "
        f"{statistics.median(r['limit_2proc'] / r['limit_thread'] for r in rounds):.2f}x one"
    )
    labels = {
        "scheduler_0": "scheduler, in process",
        "scheduler_1": "scheduler, 1 DataLoader worker",
        "scheduler_2": "scheduler, 2 DataLoader workers",
        "scheduler_0_sync": "scheduler, in process, no read-ahead (prefetch_blocks=0)",
        "scheduler_1_sync": "scheduler, 1 DataLoader worker, no read-ahead",
        "scheduler_2_sync": "scheduler, 2 DataLoader workers, no read-ahead",
        "datasets": "datasets streaming+interleave+map+naive packing, in process",
    }
    for key, label in labels.items():
        print(
            f"{label}: {tps(key):,.0f} tok/s = {ratio(key, 'limit_off'):.2f}x limit (threads off), "
            f"{ratio(key, 'limit_thread'):.2f}x limit in a second thread, {ratio(key, 'limit_on'):.2f}x limit (threads on)"
        )
    print(f"packing efficiency (real tokens / positions): {efficiency:.4%}")
    print(
        f"scheduler / datasets pipeline: {ratio('scheduler_0', 'datasets'):.2f}x in process, "
        f"{ratio('scheduler_1', 'datasets'):.2f}x with 1 worker"
    )
    print(
        f"scaling 2 workers / 1 worker on {os.cpu_count()} CPU cores: {ratio('scheduler_2', 'scheduler_1'):.2f}x with "
        f"read-ahead (one worker already uses about 1.2 cores), {ratio('scheduler_2_sync', 'scheduler_1_sync'):.2f}x "
        f"without; read-ahead gain: {ratio('scheduler_0', 'scheduler_0_sync'):.2f}x in process, "
        f"{ratio('scheduler_1', 'scheduler_1_sync'):.2f}x with 1 worker"
    )
    print(
        f"2 workers / the plain encode in 2 processes at once: {ratio('scheduler_2', 'limit_2proc'):.2f}x; that "
        f"ceiling / 1 worker (the most 2 workers / 1 worker could be with no work besides encoding): "
        f"{statistics.median(r['limit_2proc'] / r['scheduler_1'] for r in rounds):.2f}x"
    )

    if args.share_windows <= 0:
        return
    for label, weights in (("equal weights", dict.fromkeys(LANGUAGES, 1.0)), ("paper language mix", PAPER_MIX)):
        for tolerance in (0.005, None):
            worst, settled, cut = share_accuracy(
                tokenizer, corpus, weights, args.seq_len, args.share_windows, tolerance
            )
            mode = f"share_tolerance={tolerance}" + (" (default)" if tolerance == 0.005 else " (whole documents)")
            print(
                f"token shares, {label}, {mode}: max relative error after 300 windows {worst:.2%}; within 1% of "
                f"every weight from window {settled}; segments cut mid-window over {args.share_windows} windows: {cut:.1%}"
            )


if __name__ == "__main__":
    main()
