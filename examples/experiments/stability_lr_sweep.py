"""Learning-rate sweep of small Wonton models: do QK-LayerNorm, max-z loss, the monitors and SpikeGuard matter?

Wortsman et al. 2023 ("Small-scale proxies for large-scale Transformer training instabilities", arXiv
2309.14322) reproduce attention-logit growth and output-logit divergence with small models at high learning
rates. This script does the same with `wonton_hf`'s normal training path (run config -> `build_trainer`: the
HF Trainer, the Online Data Scheduler, the StabilityMonitor) for several arms over a log grid of peak LRs:

    python examples/experiments/stability_lr_sweep.py --jobs 2              # the full sweep (~1 h on 2 shared CPU cores)
    python examples/experiments/stability_lr_sweep.py --quick --output /tmp/q   # 2 LRs x 2 arms x 6 steps (seconds)
    python examples/experiments/stability_lr_sweep.py --analyse-only --output outputs/stability-sweep

Steps: split the corpus (`--corpus`, one `*_LANG.jsonl(.gz)` file per language; every 10th document held
out), train one tokenizer on the training split, fix a set of held-out windows, then train every
(arm, LR, seed) run in its own process (`--jobs` at a time, one thread each) and write `results.json` after
each run, so an interrupted sweep keeps what it finished (a rerun skips runs already in the file). Then rerun
the highest-LR diverged run with SpikeGuard, and write the analysis and figures (`stability_analysis.py`).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import stability_analysis  # noqa: E402  (next to this script)
from harness import (  # noqa: E402
    Results,
    default_corpus,
    ensure_tokenizer,
    execute,
    heldout_loss,
    heldout_windows,
    run_log,
    split_corpus,
)

logger = logging.getLogger("stability_lr_sweep")

ARMS: dict[str, dict[str, Any]] = {
    "no_qkln": {"qk_layernorm": False, "z_loss_coef": 0.0, "max_z_loss_coef": 0.0},
    "qkln": {"qk_layernorm": True, "z_loss_coef": 0.0, "max_z_loss_coef": 0.0},
    "qkln_maxz": {"qk_layernorm": True, "z_loss_coef": 0.0, "max_z_loss_coef": 2e-4},  # the paper's default
    "qkln_z": {"qk_layernorm": True, "z_loss_coef": 1e-4, "max_z_loss_coef": 0.0},  # PaLM z-loss instead
}
"""Model overrides per arm (on top of the `wonton-tiny` preset)."""

GUARD_VARIANTS: dict[str, dict[str, Any]] = {
    "skip_rollback": {},  # SpikeGuard's defaults: skip bad steps, roll back after 3 in a row
    "rollback_rewind": {"rewind_schedule": True},  # also rewind the step counter and LR schedule
    # the README's example threshold: a measured step whose worst attention logit exceeds 100 is bad too
    "attn_threshold": {"metric_thresholds": {"stability/max_attn_logit/max": 100.0}},
}


@dataclass
class RunSpec:
    arm: str
    lr: float
    seed: int
    guard: str | None = None
    """a GUARD_VARIANTS name: SpikeGuard on with these options (and checkpoints to roll back to)"""

    @property
    def name(self) -> str:
        return f"{self.arm}_lr{self.lr:g}_s{self.seed}" + (f"_guard-{self.guard}" if self.guard else "")


@dataclass
class Settings:
    corpus: str
    output: str
    steps: int = 200
    seq_len: int = 128
    batch_size: int = 8
    warmup_fraction: float = 0.1
    vocab_size: int = 4096
    tokenizer_documents: int = 400
    heldout_windows: int = 64
    every_n_steps: int = 2
    save_steps: int = 25
    lrs: list[float] = field(default_factory=lambda: [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0])
    arms: list[str] = field(default_factory=lambda: ["no_qkln", "qkln", "qkln_maxz"])
    seeds: int = 1
    extra_seed_arms: list[str] = field(default_factory=lambda: ["no_qkln", "qkln", "qkln_maxz"])
    extra_seeds: int = 1
    guard: bool = True
    jobs: int = 2


QUICK = {
    "steps": 6,
    "seq_len": 64,
    "batch_size": 2,
    "vocab_size": 512,
    "tokenizer_documents": 40,
    "heldout_windows": 2,
    "every_n_steps": 2,
    "save_steps": 2,
    "lrs": [1e-3, 1.0],
    "arms": ["no_qkln", "qkln_maxz"],
    "extra_seed_arms": [],
    "jobs": 1,
}


# -- data ------------------------------------------------------------------------------------------------------


def sources(splits: dict[str, dict[str, str]], part: str) -> list[dict[str, Any]]:
    """`DataSource` specs (the run config's `data.sources` entries) of one split, equal weights."""
    return [{"name": lang, "paths": [files[part]], "language": lang, "weight": 1.0} for lang, files in splits.items()]


def prepare(settings: Settings) -> dict[str, Any]:
    """Split, tokenizer and held-out windows: made once, shared by every run."""
    import torch

    out = Path(settings.output)
    splits = split_corpus(Path(settings.corpus), out / "data")
    tokenizer_dir = ensure_tokenizer(
        out / f"tokenizer-{settings.vocab_size}",
        sources(splits, "train"),
        settings.tokenizer_documents,
        settings.vocab_size,
    )
    heldout = out / f"heldout-{settings.heldout_windows}x{settings.seq_len}.pt"
    if not heldout.is_file():
        torch.save(
            heldout_windows(sources(splits, "heldout"), tokenizer_dir, settings.seq_len, settings.heldout_windows),
            heldout,
        )
    return {"splits": splits, "tokenizer": str(tokenizer_dir), "heldout": str(heldout)}


# -- one run (in a worker process) -----------------------------------------------------------------------------


def run_config(spec: RunSpec, settings: Settings, prepared: dict[str, Any]) -> dict[str, Any]:
    """The run config a user would write in YAML: the sweep changes only the arm's model flags and the LR."""
    guard = GUARD_VARIANTS[spec.guard] if spec.guard else None
    return {
        "run_name": spec.name,
        "output_dir": str(Path(settings.output) / "runs"),
        "resume": "never",
        "model": {"preset": "wonton-tiny", "overrides": dict(ARMS[spec.arm]), "attn_implementation": "sdpa"},
        "tokenizer": {"path": prepared["tokenizer"]},
        "data": {"seq_len": settings.seq_len, "sources": sources(prepared["splits"], "train"), "num_workers": 0},
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
            "save_steps": settings.save_steps if guard is not None else settings.steps * 10,
            "save_total_limit": None,
            "report_to": [],
            "seed": spec.seed,
            "use_cpu": True,
        },
        "monitors": {"stability": {"every_n_steps": settings.every_n_steps}, "throughput": None, "spike_guard": guard},
    }


def train_one(spec: RunSpec, settings: Settings, prepared: dict[str, Any]) -> dict[str, Any]:
    """Build through `wonton_hf.training` (no private loop), train, score the held-out windows."""
    import shutil

    import torch

    torch.set_num_threads(1)
    from wonton_hf.callbacks import SpikeGuard
    from wonton_hf.training import build_trainer, load_run_config

    config = load_run_config(None, [], **run_config(spec, settings, prepared))
    windows = torch.load(prepared["heldout"])
    started = time.process_time(), time.time()
    with run_log(settings.output, spec.name, settings.jobs):
        built = build_trainer(config)
        model = built.trainer.model
        initial = heldout_loss(model, windows)
        error = None
        try:
            built.trainer.train()
        except Exception as exc:  # a run that crashes (e.g. NaN in a kernel) is a result, not a sweep failure
            error = f"{type(exc).__name__}: {exc}"
        final = heldout_loss(model, windows)
    history = built.trainer.state.log_history
    guard = next((cb for cb in built.trainer.callback_handler.callbacks if isinstance(cb, SpikeGuard)), None)
    shutil.rmtree(config.run_dir, ignore_errors=True)  # checkpoints are only needed for the guard's rollbacks
    return {
        "name": spec.name,
        "spec": asdict(spec),
        "config": run_config(spec, settings, prepared),
        "initial_heldout_loss": initial,
        "final_heldout_loss": final if math.isfinite(final) else None,
        "error": error,
        "series": series(history),
        "guard_state": guard.state_dict() if guard else None,
        "cpu_s": time.process_time() - started[0],
        "wall_s": time.time() - started[1],
    }


def series(history: list[dict[str, Any]]) -> dict[str, list[list[float]]]:
    """key -> [[step, value], ...] for the loss, LR, grad norm and every stability/spike metric."""
    out: dict[str, list[list[float]]] = {}
    for entry in history:
        step = entry.get("step")
        for key, value in entry.items():
            wanted = key in ("loss", "learning_rate", "grad_norm") or key.startswith(("stability/", "spike/"))
            if wanted and isinstance(value, int | float):
                out.setdefault(key, []).append([step, value if math.isfinite(value) else None])
    return out


# -- the sweep ---------------------------------------------------------------------------------------------------


def grid(settings: Settings) -> list[RunSpec]:
    specs = [RunSpec(arm, lr, seed) for seed in range(settings.seeds) for arm in settings.arms for lr in settings.lrs]
    extra = [
        RunSpec(arm, lr, settings.seeds + s)
        for s in range(settings.extra_seeds)
        for arm in settings.extra_seed_arms
        if arm in settings.arms
        for lr in settings.lrs
    ]
    return specs + extra


def _log(result: dict[str, Any]) -> None:
    logger.info("%-40s held-out %s  (%.0f s)", result["name"], _fmt(result["final_heldout_loss"]), result["wall_s"])


def _fmt(value: float | None) -> str:
    return "nan" if value is None else f"{value:.3f}"


def guard_specs(settings: Settings, results: Results) -> list[RunSpec]:
    """SpikeGuard reruns of the highest-LR diverged run (or, with none diverged, of the worst run at the top LR)."""
    runs = [r for r in results.data["runs"].values() if r["spec"]["guard"] is None]
    if not settings.guard or not runs:
        return []
    done = [r["spec"] for r in results.data["runs"].values() if r["spec"]["guard"] is not None]
    if done:  # a rerun of the sweep (e.g. with a new variant) keeps the run the earlier reruns were made of
        return [RunSpec(done[0]["arm"], done[0]["lr"], done[0]["seed"], guard=variant) for variant in GUARD_VARIANTS]
    diverged = [r for r in runs if stability_analysis.divergence(r)["diverged"]]
    pool = diverged or [r for r in runs if r["spec"]["lr"] == max(x["spec"]["lr"] for x in runs)]
    worst = max(pool, key=lambda r: (r["spec"]["lr"], stability_analysis.capped_loss(r)))
    spec = worst["spec"]
    return [RunSpec(spec["arm"], spec["lr"], spec["seed"], guard=variant) for variant in GUARD_VARIANTS]


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--corpus", default=default_corpus(), help="folder of *_LANG.jsonl(.gz) files (default: %(default)s)"
    )
    parser.add_argument("--output", default=str(REPO / "outputs" / "stability-sweep"))
    parser.add_argument(
        "--quick", action="store_true", help="2 LRs x 2 arms x 6 steps: checks the script, measures nothing"
    )
    parser.add_argument("--analyse-only", action="store_true", help="redo the analysis and figures from results.json")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lrs", type=float, nargs="+")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS))
    parser.add_argument("--seeds", type=int, help="seeds for every arm")
    parser.add_argument("--extra-seed-arms", nargs="*", choices=sorted(ARMS), help="arms that get `--extra-seeds` more")
    parser.add_argument("--extra-seeds", type=int)
    parser.add_argument("--every-n-steps", type=int, help="StabilityMonitor interval")
    parser.add_argument(
        "--no-guard", dest="guard", action="store_false", default=None, help="skip the SpikeGuard reruns"
    )
    parser.add_argument("--jobs", type=int, help="runs in parallel (one thread each)")
    args = parser.parse_args(argv)
    values = dict(QUICK) if args.quick else {}
    for key in (
        "steps",
        "seq_len",
        "batch_size",
        "lrs",
        "arms",
        "seeds",
        "extra_seed_arms",
        "extra_seeds",
        "every_n_steps",
        "guard",
        "jobs",
    ):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    settings = Settings(corpus=args.corpus, output=args.output, **values)
    if not Path(settings.corpus).is_dir():
        raise SystemExit(f"--corpus {settings.corpus} is not a folder.")
    if settings.steps < 2 or settings.jobs < 1 or settings.seeds < 1:
        raise SystemExit("--steps must be >= 2, --jobs and --seeds >= 1.")
    settings.analyse_only = args.analyse_only  # type: ignore[attr-defined]
    return settings


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings = parse_args(argv)
    analyse_only = settings.__dict__.pop("analyse_only")
    out = Path(settings.output)
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out / "results.json", None if analyse_only else settings)
    if not analyse_only:
        started = time.time()
        prepared = prepare(settings)
        execute(grid(settings), train_one, settings, prepared, results, _log)
        execute(guard_specs(settings, results), train_one, settings, prepared, results, _log)
        results.data["sweep_wall_s"] = results.data.get("sweep_wall_s", 0.0) + time.time() - started
    results.data["analysis"] = stability_analysis.analyse(results.data)
    results.save()
    stability_analysis.plot(results.data, out)
    summary = stability_analysis.summary(results.data)
    (out / "summary.md").write_text(summary + "\n", encoding="utf-8")
    print(summary)
    return results.data


if __name__ == "__main__":
    main()
