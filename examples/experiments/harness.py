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
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
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
            with opener(path, "rt", encoding="utf-8") as src, open(f"{train}.tmp", "w", encoding="utf-8") as tr, \
                    open(f"{heldout}.tmp", "w", encoding="utf-8") as ho:
                for i, line in enumerate(src):
                    (ho if i % every == 0 else tr).write(line)
            os.replace(f"{train}.tmp", train)
            os.replace(f"{heldout}.tmp", heldout)  # last: its presence marks a finished split
        splits[language] = {"train": str(train), "heldout": str(heldout)}
    return splits


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
    with ProcessPoolExecutor(settings.jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        futures = {pool.submit(train_one, spec, settings, prepared): spec for spec in todo}
        for future in as_completed(futures):
            result = future.result()
            results.add(result)
            log(result)


