"""What the experiment scripts share: the corpus split, the results file, and running the grid of runs.

Each run is trained by the script's own `train_one(spec, settings, prepared)` through the normal path (run
config, `build_trainer`, the Trainer, the data scheduler, the callbacks); this module only decides where and in
which process. Kept next to the scripts (not in the package): it is experiment plumbing, not library API.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent


def default_corpus() -> str:
    """`../shared/corpus` when present (the 8-language corpus), else the package's embedded demo samples."""
    shared = REPO.parent / "shared" / "corpus"
    return str(shared) if shared.is_dir() else str(REPO / "wonton_hf" / "demo" / "data")


def corpus_files(corpus: Path) -> dict[str, Path]:
    """language -> file, from `*_LANG.jsonl`, `*_LANG.jsonl.gz` (the shared corpus' layout) or `LANG.jsonl`."""
    files = sorted(p for p in corpus.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))
    found = {p.name.split(".")[0].rsplit("_", 1)[-1]: p for p in files}
    if not found:
        raise SystemExit(f"--corpus {corpus}: no *.jsonl / *.jsonl.gz files; give a folder with one file per language.")
    return found


def split_corpus(corpus: Path, target: Path, every: int = 10) -> dict[str, dict[str, str]]:
    """Documents 0, `every`, 2*`every`, ... of each language go to the held-out file, the rest to training
    (starting at 0 so that even a file of a few documents, like the embedded demo's, holds one out)."""
    target.mkdir(parents=True, exist_ok=True)
    splits = {}
    for language, path in corpus_files(corpus).items():
        train, heldout = target / f"train_{language}.jsonl", target / f"heldout_{language}.jsonl"
        if not heldout.is_file():
            opener = gzip.open if path.name.endswith(".gz") else open
            with (
                opener(path, "rt", encoding="utf-8") as src,
                open(f"{train}.tmp", "w", encoding="utf-8") as tr,
                open(f"{heldout}.tmp", "w", encoding="utf-8") as ho,
            ):
                for i, line in enumerate(src):
                    (ho if i % every == 0 else tr).write(line)
            os.replace(f"{train}.tmp", train)
            os.replace(f"{heldout}.tmp", heldout)  # last: its presence marks a finished split
        splits[language] = {"train": str(train), "heldout": str(heldout)}
    return splits


def resolved_sources(specs: list[dict[str, Any]]) -> list[Any]:
    """`DataSource`s from run-config `data.sources` entries, their file lists resolved."""
    from wonton_hf.data import load_sources

    found = load_sources(specs)
    for source in found:
        source.resolve()
    return found


def ensure_tokenizer(target: Path, specs: list[dict[str, Any]], documents: int, vocab_size: int) -> Path:
    """The BPE tokenizer trained on the first `documents` texts of each source, made once in `target`."""
    if not (target / "tokenizer.json").is_file():
        from wonton_hf.tokenization import train_tokenizer
        from wonton_hf.tokenization.corpus import CorpusStats, iter_source_texts

        stats = CorpusStats()
        texts = (
            text
            for source in resolved_sources(specs)
            for _, text in zip(range(documents), iter_source_texts(source, stats), strict=False)
        )
        train_tokenizer(texts=texts, vocab_size=vocab_size, output_dir=target)
    return target


def heldout_windows(specs: list[dict[str, Any]], tokenizer_dir: Path, seq_len: int, count: int) -> dict[str, Any]:
    """The first `count` packed windows of the scheduler over `specs` (fixed seed, one rank): the held-out batch."""
    from transformers import AutoTokenizer

    from wonton_hf.data import OnlineDataScheduler, PackedWindowCollator

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    stream = OnlineDataScheduler(
        resolved_sources(specs), tokenizer, seq_len=seq_len, seed=1234, rank=0, world_size=1, prefetch_blocks=0
    )
    windows = [item for _, item in zip(range(count), stream, strict=False)]
    batch = PackedWindowCollator(keep_scheduler_fields=False)(windows)
    return {k: batch[k] for k in ("input_ids", "labels", "position_ids")}


def heldout_loss(model: Any, batch: dict[str, Any], chunk: int = 8) -> float:
    """Token-weighted mean cross-entropy over fixed held-out windows (`ce_loss`: no z terms, comparable across
    arms); the model's train/eval mode is left as it was."""
    import torch

    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, batch["input_ids"].shape[0], chunk):
            part = {k: v[start : start + chunk].to(model.device) for k, v in batch.items()}
            tokens = int((part["labels"][:, 1:] != -100).sum())
            total += float(model(**part).ce_loss) * tokens
            count += tokens
    model.train(was_training)
    return total / max(count, 1)


@contextmanager
def run_log(output: str, name: str, jobs: int) -> Iterator[None]:
    """`output/logs/<name>.log`; with `jobs` > 1 the run is a worker process of its own, and its stdout and stderr
    go there."""
    log_file = Path(output) / "logs" / f"{name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as log:
        if jobs > 1:
            os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        yield


class Results:
    """results.json, rewritten after every run (atomically), so a stopped experiment keeps its finished runs and a
    rerun skips them."""

    def __init__(self, path: Path, settings: Any | None) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
        if settings is not None:  # the settings of every invocation that trained runs into this file
            self.data.setdefault("invocations", []).append(asdict(settings) if is_dataclass(settings) else settings)

    def add(self, result: dict[str, Any]) -> None:
        self.data["runs"][result["name"]] = result
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, allow_nan=False))
        tmp.replace(self.path)


def save_figure(dpi: int, fig: Any, path: Path) -> Path:
    """Write a matplotlib figure and close it (a sweep draws many; open figures would pile up)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def execute(
    specs: list[Any],
    train_one: Callable[[Any, Any, dict[str, Any]], dict[str, Any]],
    settings: Any,
    prepared: dict[str, Any],
    results: Results,
    log: Callable[[dict[str, Any]], None],
) -> None:
    """Train every spec not in `results` yet: in this process for `settings.jobs == 1` (no start-up cost per run:
    what `--quick` and its test use), else `jobs` single-threaded processes, one fresh process per run."""
    todo = [s for s in specs if s.name not in results.data["runs"]]
    if not todo:
        return
    os.environ.update(TOKENIZERS_PARALLELISM="false", RAYON_NUM_THREADS="1")
    if settings.jobs == 1 or len(todo) == 1:
        for spec in todo:
            results.add(train_one(spec, settings, prepared))
            log(results.data["runs"][spec.name])
        return
    os.environ["OMP_NUM_THREADS"] = "1"
    with ProcessPoolExecutor(
        settings.jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1
    ) as pool:
        futures = {pool.submit(train_one, spec, settings, prepared): spec for spec in todo}
        for future in as_completed(futures):
            result = future.result()
            results.add(result)
            log(result)
