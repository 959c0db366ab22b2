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
import time
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
    """Train every spec not in `results` yet in `settings.jobs` single-threaded worker processes, `--quick` and the
    full runs alike (one execution path: what the quick test checks is what the experiment runs). A worker serves
    several runs in turn: each run sets its own seed and builds its own model, scheduler and Trainer, and reusing
    the process saves the torch/transformers import (seconds of CPU per run on a shared machine)."""
    todo = [s for s in specs if s.name not in results.data["runs"]]
    if not todo:
        return
    os.environ.update(TOKENIZERS_PARALLELISM="false", RAYON_NUM_THREADS="1", OMP_NUM_THREADS="1")
    with ProcessPoolExecutor(min(settings.jobs, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train_one, spec, settings, prepared): spec for spec in todo}
        for future in as_completed(futures):
            result = future.result()
            results.add(result)
            log(result)


# -- provenance ----------------------------------------------------------------------------------------------------


def provenance(argv: list[str] | None) -> dict[str, Any]:
    """The commit the runs start from, whether the tree differs from it (tracked or untracked files, ignored ones
    aside), and the command: recorded in results.json by every invocation that trains."""
    import subprocess
    import sys

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    status = git("status", "--porcelain")
    args = list(sys.argv[1:] if argv is None else argv)
    script = Path(sys.argv[0]).resolve()
    shown = str(script.relative_to(REPO)) if script.is_relative_to(REPO) and script.suffix == ".py" else "<script>"
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "dirty": bool(status),
        "dirty_files": status.splitlines()[:20],
        "command": " ".join(["python", shown, *args]),
    }


# -- data --------------------------------------------------------------------------------------------------------


def corpus_sources(corpus: Path) -> dict[str, str]:
    """language -> the corpus file itself: runs read the shared corpus in place (nothing is copied); the held-out
    documents are left out of training by the package's split (`evaluation.held_out_share`)."""
    return {name: str(path) for name, path in corpus_files(corpus).items()}


def code_source(target: Path, files: int, chars: int = 4000) -> str:
    """The first `files` top-level modules of the interpreter's standard library (sorted) as a jsonl source, each
    cut at blank lines into documents of at most ~`chars` characters: whole modules (~20 kB each) would give too
    few documents for a held-out set of 50 by the hash split, and are longer than the language documents (~1 kB)."""
    import sysconfig

    path = target / f"code_{files}x{chars}.jsonl"
    if not path.is_file():
        target.mkdir(parents=True, exist_ok=True)
        modules = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:files]
        with open(f"{path}.tmp", "w", encoding="utf-8") as out:
            for module in modules:
                text = module.read_text(encoding="utf-8", errors="replace")
                for i, piece in enumerate(_pieces(text, chars)):
                    out.write(json.dumps({"id": f"{module.name}#{i}", "text": piece}) + "\n")
        os.replace(f"{path}.tmp", path)
    return str(path)


def _pieces(text: str, chars: int) -> list[str]:
    """`text` cut at blank lines into pieces of at most ~`chars` characters (a block longer than that stays whole)."""
    pieces, current = [], ""
    for block in text.split("\n\n"):
        if current and len(current) + len(block) + 2 > chars:
            pieces.append(current)
            current = ""
        current = f"{current}\n\n{block}" if current else block
    if current.strip():
        pieces.append(current)
    return pieces


def document_eval_dataset(scheduler: Any, documents: int, tokens_per_document: int) -> Any:
    """The fixed held-out set: per source, the first `documents` held-out documents (the package's split: a hash of
    the text, `wonton_hf.data.heldout`; file order), each cut to its first `tokens_per_document` tokens, packed into
    windows as the in-loop evaluation packs them; bytes are credited per token, so bits per byte cover exactly the
    scored tokens.

    Why cut: the package's evaluation packs whole documents, so 50 documents of ~400 tokens cost more to score
    every 10 steps than the training itself at this size; equal prefixes put the same number of documents and
    tokens behind every source's number. The price: the loss of a document's start (little context) is higher
    than of its middle, the same for every arm.
    """
    import numpy as np

    from wonton_hf.data.callbacks.held_out import EvalWindowDataset
    from wonton_hf.data.heldout import EvalWindows, _tokens_and_bytes, is_held_out, iter_documents
    from wonton_hf.data.packing import fill_window

    settings, share = scheduler.settings, scheduler.settings.held_out_share
    sets = []
    for index, source in enumerate(scheduler.sources):
        pieces = []
        for text in iter_documents(source):
            if is_held_out(text, share):
                ids, nbytes = _tokens_and_bytes(text, scheduler.backend, settings)
                pieces.append((ids[:tokens_per_document], nbytes[:tokens_per_document]))
                if len(pieces) == documents:
                    break
        if len(pieces) < documents:
            raise SystemExit(
                f"source {source.name}: only {len(pieces)} held-out documents at held_out_share={share}; "
                f"raise --held-out-share or lower --heldout-documents."
            )
        queue, taken = list(reversed(pieces)), []

        def next_chunk(room: int, queue=queue, taken=taken, index=index) -> tuple[int, Any] | None:
            if not queue:
                return None
            ids, nbytes = queue.pop()
            if len(ids) > room:
                queue.append((ids[room:], nbytes[room:]))
                ids, nbytes = ids[:room], nbytes[:room]
            taken.append(nbytes)
            return index, ids

        windows, scored = [], []
        while (window := fill_window(settings.seq_len, next_chunk, settings.pad_token_id or 0)) is not None:
            nbytes = np.zeros(settings.seq_len, dtype=np.int64)
            flat = np.concatenate(taken)
            nbytes[: len(flat)] = flat
            taken.clear()
            scored.append(int(nbytes[window.labels != -100].sum()))
            windows.append(
                {
                    "input_ids": window.input_ids,
                    "labels": window.labels,
                    "position_ids": window.position_ids,
                    "source_ids": window.source_ids,
                }
            )
        sets.append(EvalWindows(source.name, windows, scored, len(pieces)))
    return EvalWindowDataset(sets)


def use_eval_dataset(built: Any, dataset: Any) -> None:
    """Score `dataset` in the run's in-loop evaluation (the Trainer's evaluate + `HeldOutEvaluation`) instead of
    the windows the config built."""
    from wonton_hf.data.callbacks.held_out import HeldOutEvaluation

    built.trainer.eval_dataset = dataset
    for callback in built.trainer.callback_handler.callbacks:
        if isinstance(callback, HeldOutEvaluation):
            callback.dataset = dataset


def heldout_points(history: list[dict[str, Any]], names: list[str], tokens_per_step: int) -> list[dict[str, Any]]:
    """Each in-loop evaluation of the Trainer's log history: step, tokens, loss and bits per byte per source."""
    points = []
    for entry in history:
        if "eval_loss" in entry:
            points.append(
                {
                    "step": entry["step"],
                    "tokens": entry["step"] * tokens_per_step,
                    "loss": {n: entry[f"eval_{n}_loss"] for n in names},
                    "bpb": {n: entry[f"eval_{n}_bpb"] for n in names},
                }
            )
    return points


def lr_recorder() -> Any:
    """A callback keeping the learning rate of every optimizer step (for the integrated LR of a schedule)."""
    from transformers import TrainerCallback

    class LearningRates(TrainerCallback):
        def __init__(self) -> None:
            self.rates: list[float] = []

        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            if optimizer is not None:
                self.rates.append(float(optimizer.param_groups[0]["lr"]))

    return LearningRates()


# -- statistics ----------------------------------------------------------------------------------------------------


def describe(values: list[float]) -> dict[str, Any]:
    """mean, standard error of the mean, 95% t-interval of the mean, n (None where n is too small)."""
    import math
    import statistics

    from scipy import stats

    n = len(values)
    if n == 0:
        return {"mean": None, "se": None, "lo": None, "hi": None, "n": 0}
    mean = statistics.fmean(values)
    if n == 1:
        return {"mean": mean, "se": None, "lo": None, "hi": None, "n": 1}
    se = statistics.stdev(values) / math.sqrt(n)
    half = float(stats.t.ppf(0.975, n - 1)) * se
    return {"mean": mean, "se": se, "lo": mean - half, "hi": mean + half, "n": n}


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """`a - b` over the seeds both have (same seed: same initial weights, same data order where the arms allow):
    `describe` of the differences, plus how many are below zero."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    return {**describe(diffs), "below_zero": sum(d < 0 for d in diffs), "seeds": seeds}


def fmt(d: dict[str, Any], digits: int = 3) -> str:
    """`mean ± SE (n=…)`, with the 95% t-interval for n >= 2."""
    if d["mean"] is None:
        return "n/a (n=0)"
    if d["se"] is None:
        return f"{d['mean']:.{digits}f} (n={d['n']})"
    return f"{d['mean']:.{digits}f} ± {d['se']:.{digits}f} [{d['lo']:.{digits}f}, {d['hi']:.{digits}f}] (n={d['n']})"


def table_row(label: str, cells: list[str]) -> str:
    """One Markdown table row of a summary."""
    return "| " + " | ".join([label, *cells]) + " |"


def summary_head(title: str, data: dict[str, Any], runs: int, cpu_s: float) -> list[str]:
    """The first lines every summary.md starts with: its title, where each invocation ran from, and its cost."""
    lines = [title, ""]
    for inv in data.get("invocations", []):
        p = inv.get("provenance", {})
        lines.append(f"- run from commit `{p.get('commit')}` (tree dirty: {p.get('dirty')}): `{p.get('command')}`")
    lines.append(
        f"- runs: {runs}; CPU time of all runs (training + in-loop evaluation, one thread each): "
        f"{cpu_s:.0f} s ({cpu_s / 3600:.2f} CPU-hours)"
    )
    return lines


# -- one run -------------------------------------------------------------------------------------------------------


def train_run(config_values: dict[str, Any], prepared: dict[str, Any], output: str, jobs: int) -> dict[str, Any]:
    """Train one run config through the package's path (`build_trainer` -> the Trainer with the data scheduler and
    its callbacks -> `run`, which writes `final-averaged/` when `train.average_last` is set), the in-loop evaluation
    scoring `document_eval_dataset` every `evaluation.eval_steps`; then, for averaged runs, the averaged weights on
    the same set. Returns the run's record for results.json (the run folder is deleted)."""
    import shutil

    import torch

    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM

    from wonton_hf.data.callbacks.held_out import HeldOutEvaluation
    from wonton_hf.training import build_trainer, load_run_config, run

    config = load_run_config(None, [], **config_values)
    name = config_values["run_name"]
    started = time.process_time(), time.time()
    with run_log(output, name, jobs):
        built = build_trainer(config)
        dataset = document_eval_dataset(built.scheduler, prepared["heldout_documents"], prepared["tokens_per_document"])
        use_eval_dataset(built, dataset)
        rates = lr_recorder()
        built.trainer.add_callback(rates)
        run(built)
        trainer, history = built.trainer, built.trainer.state.log_history
        tokens_per_step = config.train.global_batch_tokens
        points = heldout_points(history, dataset.names, tokens_per_step)
        averaged = None
        if config.train.average_last:
            model = trainer.model
            model.load_state_dict(AutoModelForCausalLM.from_pretrained(config.run_dir / "final-averaged").state_dict())
            held_out = next(c for c in trainer.callback_handler.callbacks if isinstance(c, HeldOutEvaluation))
            held_out.on_train_begin(trainer.args, trainer.state, trainer.control, model=model)  # hooks back on
            trainer.evaluate()
            held_out.on_train_end(trainer.args, trainer.state, trainer.control)
            averaged = heldout_points(history[-1:], dataset.names, tokens_per_step)[0]
    shutil.rmtree(config.run_dir, ignore_errors=True)
    return {
        "name": name,
        "config": config_values,
        "heldout": points,
        "averaged_heldout": averaged,
        "heldout_set": {s.name: {"documents": s.documents, "windows": len(s.windows)} for s in dataset.sets},
        "weights": _weight_series(history),
        "train_loss": [[e["step"], e["loss"]] for e in history if "loss" in e],
        "learning_rates": [float(f"{r:.6g}") for r in rates.rates],
        "integrated_lr": sum(rates.rates),
        "cpu_s": time.process_time() - started[0],
        "wall_s": time.time() - started[1],
    }


def _weight_series(history: list[dict[str, Any]]) -> dict[str, list[list[float]]]:
    """source -> [[step, weight], ...] from the data tracker's `data/weight/<source>` log entries."""
    out: dict[str, list[list[float]]] = {}
    for entry in history:
        for key, value in entry.items():
            if key.startswith("data/weight/"):
                out.setdefault(key.split("/", 2)[2], []).append([entry["step"], value])
    return out


def mean_weights(run: dict[str, Any]) -> dict[str, float]:
    """A run's time-averaged mixture weights (the mean of its logged weights, renormalised to sum to 1)."""
    import statistics

    means = {name: statistics.fmean(w for _, w in points) for name, points in run["weights"].items()}
    total = sum(means.values())
    return {name: value / total for name, value in means.items()}


# -- what the mixing and schedules experiments share -------------------------------------------------------------

PAPER_MIX = {"en": 80.1, "zh": 6.3, "ja": 6.3, "de": 1.6, "fr": 1.5, "it": 1.4, "ko": 1.4, "es": 1.4}
"""The Wonton report's language shares (per cent of the multilingual part)."""
PAPER_CODE_SHARE = 0.086
"""Code's share of the report's Figure 1 mix (8.6%); the languages share the rest in PAPER_MIX's proportions."""


def paper_weights(names: list[str]) -> dict[str, float]:
    """The report's mix over `names`: code 8.6% (if present), the languages the rest in PAPER_MIX's proportions
    (English ~73% of the whole)."""
    languages = {n: PAPER_MIX.get(n, 0.0) for n in names if n != "code"}
    total = sum(languages.values()) or 1.0
    code = PAPER_CODE_SHARE if "code" in names else 0.0
    weights = {n: (1 - code) * w / total for n, w in languages.items()}
    if "code" in names:
        weights["code"] = code
    return dict(sorted(weights.items()))


def prepare_sources(settings: Any) -> dict[str, Any]:
    """Sources (the corpus files in place, plus the standard library as code) and the BPE tokenizer trained on
    the first `settings.tokenizer_documents` documents of each: made once per output folder, shared by the runs."""
    out = Path(settings.output)
    paths = corpus_sources(Path(settings.corpus))
    paths["code"] = code_source(out / "data", settings.code_files)
    names = sorted(paths)
    specs = [{"name": n, "paths": [paths[n]], "weight": 1.0} for n in names]
    tokenizer = ensure_tokenizer(
        out / f"tokenizer-{settings.vocab_size}", specs, settings.tokenizer_documents, settings.vocab_size
    )
    return {
        "paths": paths,
        "names": names,
        "tokenizer": str(tokenizer),
        "heldout_documents": settings.heldout_documents,
        "tokens_per_document": settings.tokens_per_document,
    }


def base_run_config(name: str, seed: int, settings: Any, prepared: dict[str, Any], weights: dict[str, float]) -> dict:
    """The run config a user would write in YAML (wonton-tiny, the sources at `weights`, cosine to 10% at
    `settings.learning_rate`, the in-loop evaluation every `settings.eval_every` steps); the experiments change
    only what their arm is about."""
    steps = settings.steps
    return {
        "run_name": name,
        "output_dir": str(Path(settings.output) / "runs"),
        "resume": "never",
        "model": {"preset": "wonton-tiny", "attn_implementation": "sdpa"},
        "tokenizer": {"path": prepared["tokenizer"]},
        "data": {
            "seq_len": settings.seq_len,
            "num_workers": 0,
            "feedback": None,
            "sources": [{"name": n, "paths": [prepared["paths"][n]], "weight": weights[n]} for n in prepared["names"]],
        },
        "evaluation": {
            "eval_steps": settings.eval_every,
            "held_out_share": settings.held_out_share,
            "windows_per_source": 1,  # replaced by `document_eval_dataset` in `train_run`
            "batch_size": settings.eval_batch_size,
        },
        "optimizer": {
            "learning_rate": settings.learning_rate,
            "lr_scheduler_type": "cosine_with_min_lr",
            "min_lr_rate": 0.1,
            "warmup_steps": max(1, round(settings.warmup_fraction * steps)),
        },
        "train": {
            "max_steps": steps,
            "per_device_batch_size": settings.batch_size,
            "global_batch_tokens": settings.batch_size * settings.seq_len,
            "logging_steps": settings.logging_steps,
            "save_steps": steps * 10,
            "report_to": [],
            "seed": seed,
            "use_cpu": True,
        },
        "monitors": {"stability": None, "throughput": None, "spike_guard": None},
    }
