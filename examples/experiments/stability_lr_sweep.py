"""Learning-rate sweep of small Wonton models: do QK-LayerNorm, the max-z loss, the z-loss and the monitors matter?

Wortsman et al. 2023 ("Small-scale proxies for large-scale Transformer training instabilities", arXiv
2309.14322) reproduce attention-logit growth and output-logit divergence with small models at high learning
rates. This script trains the same kind of grid with `wonton_hf`'s normal training path (run config ->
`build_trainer`: the HF Trainer, the Online Data Scheduler, the in-loop held-out evaluation, the
StabilityMonitor) over arms x widths x Wortsman's LR grid x seeds:

    python examples/experiments/stability_lr_sweep.py --jobs 2                  # the full sweep
    python examples/experiments/stability_lr_sweep.py --quick --output /tmp/q   # 2 arms x 2 LRs x 2 seeds, 12 steps
    python examples/experiments/stability_lr_sweep.py --analyse-only --results R/results.json --output DIR

Steps: split the corpus with the package's held-out split (`wonton_hf.data.heldout.is_held_out`, a hash of the
document's text: the documents `evaluation.held_out_share` would carve out), keep the first `heldout_documents`
held-out documents of every language, cut each to its first `heldout_prefix_tokens` tokens (so that >= 50
documents per source are scored every 10 steps at a fraction of the training cost), train one tokenizer on the
training split, then train every run in its own worker process (`--jobs` at a time, one thread each) with those
files as the run's `evaluation.extra_sources`: the package's `HeldOutEvaluation` reports each source's held-out
loss and bits per byte every `eval_steps` and before the first step. `results.json` is rewritten after every
run, so a stopped sweep keeps what it finished and a rerun skips it. `stability_analysis.py` does the rest.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import stability_analysis  # noqa: E402  (next to this script)
from harness import Results, corpus_files, default_corpus, ensure_tokenizer, run_log  # noqa: E402

logger = logging.getLogger("stability_lr_sweep")

ARMS: dict[str, dict[str, Any]] = {
    "no_qkln": {"qk_layernorm": False, "z_loss_coef": 0.0, "max_z_loss_coef": 0.0},
    "qkln_maxz": {"qk_layernorm": True, "z_loss_coef": 0.0, "max_z_loss_coef": 2e-4},  # the paper's default
    "qkln_z": {"qk_layernorm": True, "z_loss_coef": 1e-4, "max_z_loss_coef": 0.0},  # PaLM / Wortsman z-loss instead
}
"""Model overrides per arm (on top of the `wonton-tiny` preset)."""

WIDTHS: dict[str, dict[str, int]] = {
    "d128": {},  # wonton-tiny itself: 4 layers, d 128, 4 heads of 32, d_ff 512
    "d64": {"hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 256},  # same depth and head dim
}
"""Model shapes (overrides of `wonton-tiny`): the head dimension stays 32, so attention logits compare."""

WORTSMAN_LRS = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
"""Wortsman et al.'s grid: 3e-4 to 3e-1 in half-decade steps."""

SERIES_KEYS = ("loss", "grad_norm")
MONITOR_DENSE_STEPS = 30
"""monitor series are kept for every step up to here (the early-warning window), then every 10th step"""


@dataclass
class RunSpec:
    arm: str
    width: str
    lr: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.width}_{self.arm}_lr{self.lr:g}_s{self.seed}"


@dataclass
class Settings:
    corpus: str
    output: str
    steps: int = 100
    seq_len: int = 128
    batch_size: int = 4
    warmup_fraction: float = 0.1
    vocab_size: int = 2048
    tokenizer_documents: int = 200
    held_out_share: float = 0.07
    """the package's held-out share (`evaluation.held_out_share`): ~70 of ~1,000 documents per language"""
    heldout_documents: int = 50
    heldout_prefix_tokens: int = 24
    eval_steps: int = 10
    every_n_steps: int = 1
    lrs: list[float] = field(default_factory=lambda: list(WORTSMAN_LRS))
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    widths: dict[str, int] = field(default_factory=lambda: {"d128": 3, "d64": 2})
    """width -> seeds"""
    jobs: int = 2


QUICK = {
    "steps": 12,
    "seq_len": 64,
    "batch_size": 2,
    "vocab_size": 512,
    "tokenizer_documents": 40,
    "held_out_share": 0.5,
    "heldout_documents": 1,
    "heldout_prefix_tokens": 16,
    "eval_steps": 4,
    "lrs": [1e-3, 3e-1],
    "arms": ["no_qkln", "qkln_maxz"],
    "widths": {"d64": 2},
    "jobs": 2,
}


# -- data ------------------------------------------------------------------------------------------------------


def sources(files: dict[str, str], prefix: str = "") -> list[dict[str, Any]]:
    """`DataSource` specs (run config `data.sources` / `evaluation.extra_sources` entries), equal weights."""
    return [{"name": prefix + lang, "paths": [path], "language": lang, "weight": 1.0} for lang, path in files.items()]


def split_heldout(corpus: Path, target: Path, share: float, keep: int) -> dict[str, dict[str, Any]]:
    """Per language: a training file without the held-out documents, and the first `keep` held-out texts.

    The split is the package's (`is_held_out` on the normalised text, what `evaluation.held_out_share` carves),
    made once into files so that the evaluation can score a prefix of each held-out document.
    """
    from wonton_hf.data import load_sources
    from wonton_hf.data.heldout import held_out_key, is_held_out, iter_documents

    target.mkdir(parents=True, exist_ok=True)
    out = {}
    for lang, path in corpus_files(corpus).items():
        train, heldout = target / f"train_{lang}.jsonl", target / f"heldout_{lang}.json"
        if not heldout.is_file():
            (source,) = load_sources([{"name": lang, "paths": [str(path)]}])
            held: list[str] = []
            with open(f"{train}.tmp", "w", encoding="utf-8") as tr:
                for text in iter_documents(source):
                    if is_held_out(text, share):
                        held.append(text)
                    else:
                        tr.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            if len(held) < keep:
                raise SystemExit(f"{path}: {len(held)} held-out documents at share {share}, {keep} wanted.")
            texts = held[:keep]
            keys = [held_out_key(t) for t in texts]
            Path(f"{train}.tmp").replace(train)
            heldout.write_text(json.dumps({"held_out": len(held), "texts": texts, "keys": keys}, ensure_ascii=False))
        out[lang] = {"train": str(train), "heldout": str(heldout)}
    return out


def prefix_files(splits: dict[str, dict[str, Any]], tokenizer_dir: Path, tokens: int, target: Path) -> dict[str, str]:
    """Each held-out document cut after its first `tokens` tokens (at that token's end), one jsonl per language."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    target.mkdir(parents=True, exist_ok=True)
    out = {}
    for lang, files in splits.items():
        path = target / f"heldout_{lang}.jsonl"
        if not path.is_file():
            texts = json.loads(Path(files["heldout"]).read_text())["texts"]
            lines = []
            for text in texts:
                offsets = backend.encode(text, add_special_tokens=False).offsets
                end = offsets[min(tokens, len(offsets)) - 1][1] if offsets else len(text)
                lines.append(json.dumps({"text": text[:end]}, ensure_ascii=False))
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out[lang] = str(path)
    return out


def windows_needed(files: dict[str, str], tokenizer_dir: Path, seq_len: int) -> int:
    """The evaluation windows per source that hold every (cut) held-out document of the largest source."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    most = 0
    for path in files.values():
        texts = [json.loads(line)["text"] for line in Path(path).read_text(encoding="utf-8").splitlines()]
        tokens = sum(len(backend.encode(t, add_special_tokens=False).ids) + 2 for t in texts)  # + BOS, EOS
        most = max(most, tokens)
    return math.ceil(most / seq_len) + 1


def prepare(settings: Settings) -> dict[str, Any]:
    """Split, tokenizer and held-out files: made once, shared by every run."""
    out = Path(settings.output)
    splits = split_heldout(
        Path(settings.corpus),
        out / f"data-{settings.held_out_share:g}",
        settings.held_out_share,
        settings.heldout_documents,
    )
    train = {lang: f["train"] for lang, f in splits.items()}
    tokenizer_dir = ensure_tokenizer(
        out / f"tokenizer-{settings.vocab_size}", sources(train), settings.tokenizer_documents, settings.vocab_size
    )
    heldout = prefix_files(
        splits, tokenizer_dir, settings.heldout_prefix_tokens, out / f"heldout-{settings.heldout_prefix_tokens}"
    )
    return {
        "train": train,
        "heldout": heldout,
        "tokenizer": str(tokenizer_dir),
        "windows_per_source": windows_needed(heldout, tokenizer_dir, settings.seq_len),
        "held_out_available": {
            lang: json.loads(Path(f["heldout"]).read_text())["held_out"] for lang, f in splits.items()
        },
    }


# -- one run (in a worker process) -----------------------------------------------------------------------------


def run_config(spec: RunSpec, settings: Settings, prepared: dict[str, Any]) -> dict[str, Any]:
    """The run config a user would write in YAML: the sweep changes only the model flags, the width and the LR."""
    return {
        "run_name": spec.name,
        "output_dir": str(Path(settings.output) / "runs"),
        "resume": "never",
        "model": {
            "preset": "wonton-tiny",
            "overrides": {**ARMS[spec.arm], **WIDTHS[spec.width]},
            "attn_implementation": "sdpa",
        },
        "tokenizer": {"path": prepared["tokenizer"]},
        "data": {"seq_len": settings.seq_len, "sources": sources(prepared["train"]), "num_workers": 0},
        "evaluation": {
            "eval_steps": settings.eval_steps,
            "held_out_share": None,  # the training files already leave the held-out documents out
            "windows_per_source": prepared["windows_per_source"],
            "extra_sources": sources(prepared["heldout"], prefix="heldout_"),
            "batch_size": 16,
        },
        "optimizer": {
            "learning_rate": spec.lr,
            "warmup_steps": max(1, round(settings.warmup_fraction * settings.steps)),
            "lr_scheduler_type": "cosine_with_min_lr",
            "min_lr_rate": 0.1,
        },
        "train": {
            "max_steps": settings.steps,
            "per_device_batch_size": settings.batch_size,
            "global_batch_tokens": settings.batch_size * settings.seq_len,
            "logging_steps": 1,
            "save_steps": settings.steps * 10,
            "save_total_limit": None,
            "report_to": [],
            "seed": spec.seed,
            "use_cpu": True,
        },
        "monitors": {"stability": {"every_n_steps": settings.every_n_steps}, "throughput": None, "spike_guard": None},
    }


def train_one(spec: RunSpec, settings: Settings, prepared: dict[str, Any]) -> dict[str, Any]:
    """Build through `wonton_hf.training` (no private loop), evaluate before the first step, train."""
    import shutil

    import torch

    torch.set_num_threads(1)
    from wonton_hf.training import build_trainer, load_run_config

    config = load_run_config(None, [], **run_config(spec, settings, prepared))
    started = time.process_time(), time.time()
    with run_log(settings.output, spec.name, settings.jobs):
        built = build_trainer(config)
        built.trainer.args.eval_on_start = True  # the held-out loss at initialisation (l0 of LR sensitivity)
        error = None
        try:
            built.trainer.train()
        except Exception as exc:  # a run that crashes (e.g. NaN in a kernel) is a result, not a sweep failure
            error = f"{type(exc).__name__}: {exc}"
    shutil.rmtree(config.run_dir, ignore_errors=True)
    return {
        "name": spec.name,
        "spec": asdict(spec),
        "error": error,
        "series": series(built.trainer.state.log_history),
        "pid": os.getpid(),  # the worker process that trained it (the tests check it is not the sweep's own)
        "cpu_s": round(time.process_time() - started[0], 2),
        "wall_s": round(time.time() - started[1], 2),
    }


def _round(value: float) -> float | None:
    return float(f"{value:.4g}") if math.isfinite(value) else None


def series(history: list[dict[str, Any]]) -> dict[str, list[list[float | None]]]:
    """key -> [[step, value], ...] (4 significant digits): loss and grad norm every step, the held-out evaluation, and the monitors'
    worst-block summaries every step up to `MONITOR_DENSE_STEPS`, then every 10th (results.json stays small)."""
    wanted = set(stability_analysis.METRICS.values()) | {"stability/output_norm/rms_inf"}
    out: dict[str, list[list[float | None]]] = {}
    for entry in history:
        step = int(entry.get("step", 0))
        for key, value in entry.items():
            monitor = key in wanted and (step <= MONITOR_DENSE_STEPS or step % 10 == 0)
            if (key in SERIES_KEYS or key.startswith("eval_") or monitor) and isinstance(value, int | float):
                if key.endswith(("_runtime", "_per_second")):
                    continue
                out.setdefault(key, []).append([step, _round(float(value))])
    return out


# -- the sweep ---------------------------------------------------------------------------------------------------


class CompactResults(Results):
    """`harness.Results` written without indentation: the per-step series of ~100 runs stay well under 1 MB."""

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, separators=(",", ":"), allow_nan=False))
        tmp.replace(self.path)


def execute(specs: list[RunSpec], settings: Settings, prepared: dict[str, Any], results: Results) -> None:
    """Train every spec not in `results` yet in `settings.jobs` worker processes (one thread each), always: `--quick`
    takes the same path as the full sweep.

    Unlike `harness.execute` (a fresh process per run), a worker trains run after run: importing torch,
    transformers and wonton_hf costs ~8 s of CPU per process, half of a 100-step run here. Every run builds its
    own model, Trainer and scheduler from its run config and seeds them (`train.seed`), so nothing of the previous
    run carries over but the imported modules.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed

    todo = [s for s in specs if s.name not in results.data["runs"]]
    if not todo:
        return
    os.environ.update(TOKENIZERS_PARALLELISM="false", RAYON_NUM_THREADS="1", OMP_NUM_THREADS="1")
    with ProcessPoolExecutor(settings.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_one, spec, settings, prepared) for spec in todo]
        for future in as_completed(futures):
            result = future.result()
            results.add(result)
            _log(result)


def grid(settings: Settings) -> list[RunSpec]:
    """Width by width in the order given (the tiny width first), seed by seed, LR by LR with the arms innermost: a
    sweep stopped early has whole seeds of the first width, and what it lacks of the last block is the same LRs in
    every arm (arms are compared with the same n)."""
    return [
        RunSpec(arm, width, lr, seed)
        for width, seeds in settings.widths.items()
        for seed in range(seeds)
        for lr in settings.lrs
        for arm in settings.arms
    ]


def provenance(argv: list[str]) -> dict[str, Any]:
    """The commit the runs start from, whether the tree was dirty (tracked or untracked, ignored files aside), and the
    command."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
        "command": "python examples/experiments/stability_lr_sweep.py " + " ".join(argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _log(result: dict[str, Any]) -> None:
    final = stability_analysis.final_bpb(result)
    logger.info(
        "%-36s held-out bpb %s  (%.0f s CPU)",
        result["name"],
        "nan" if final is None else f"{final:.3f}",
        result["cpu_s"],
    )


def parse_args(argv: list[str]) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--corpus", default=default_corpus(), help="folder of *_LANG.jsonl(.gz) files (default: %(default)s)"
    )
    parser.add_argument("--output", default=str(REPO / "outputs" / "stability-sweep"), help="results, summary, figures")
    parser.add_argument("--results", help="--analyse-only: the results.json to read (default: OUTPUT/results.json)")
    parser.add_argument("--quick", action="store_true", help="2 arms x 2 LRs x 2 seeds x 12 steps: checks the path")
    parser.add_argument("--analyse-only", action="store_true", help="redo the summary and figures from results.json")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--lrs", type=float, nargs="+")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS))
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds per width, in the order of --widths")
    parser.add_argument("--widths", nargs="+", choices=sorted(WIDTHS))
    parser.add_argument("--jobs", type=int, help="runs in parallel (one worker process each, one thread)")
    args = parser.parse_args(argv)
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    for key in ("steps", "lrs", "arms", "jobs"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.widths or args.seeds:
        widths = args.widths or list(values.get("widths", Settings("", "").widths))
        seeds = args.seeds or [3] * len(widths)
        if len(seeds) != len(widths):
            raise SystemExit(f"--seeds: one count per width ({len(widths)}), got {len(seeds)}.")
        values["widths"] = dict(zip(widths, seeds, strict=True))
    settings = Settings(corpus=args.corpus, output=args.output, **values)
    if not args.analyse_only and not Path(settings.corpus).is_dir():
        raise SystemExit(f"--corpus {settings.corpus} is not a folder.")
    if settings.steps < settings.eval_steps or settings.jobs < 1 or min(settings.widths.values()) < 1:
        raise SystemExit(f"--steps must be >= {settings.eval_steps} (one evaluation), --jobs and --seeds >= 1.")
    return settings, args


def analyse_and_write(data: dict[str, Any], out: Path) -> str:
    """summary.md and the figures in `out`, from the results alone."""
    out.mkdir(parents=True, exist_ok=True)
    stability_analysis.plot(data, out)
    summary = stability_analysis.summary(data)
    (out / "summary.md").write_text(summary, encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    settings, args = parse_args(argv)
    out = Path(settings.output)
    if args.analyse_only:
        path = Path(args.results) if args.results else out / "results.json"
        data = json.loads(path.read_text())
        print(analyse_and_write(data, out))
        return data
    out.mkdir(parents=True, exist_ok=True)
    results = CompactResults(out / "results.json", None)
    results.data.setdefault("invocations", []).append({"settings": asdict(settings), **provenance(argv)})
    started = time.time()
    prepared = prepare(settings)
    results.data["heldout"] = {
        "held_out_share": settings.held_out_share,
        "documents_per_source": settings.heldout_documents,
        "prefix_tokens": settings.heldout_prefix_tokens,
        "held_out_available": prepared["held_out_available"],
        "windows_per_source": prepared["windows_per_source"],
    }
    results.data["example_config"] = run_config(grid(settings)[0], settings, prepared)  # every run's, but its spec
    results.save()
    execute(grid(settings), settings, prepared, results)
    results.data["sweep_wall_s"] = round(results.data.get("sweep_wall_s", 0.0) + time.time() - started, 1)
    results.save()
    print(analyse_and_write(results.data, out))
    return results.data


if __name__ == "__main__":
    main()
