"""LR schedules at CPU scale: cosine, WSD and constant LR + checkpoint averaging, each at its own best peak LR.

Every schedule is run at every peak LR of `--learning-rates` (>= 4) x `--seeds` seeds through `wonton_hf`'s
normal path (run config -> `build_trainer` -> the HF Trainer with the Online Data Scheduler and the in-loop
held-out evaluation -> `run`, which writes `final-averaged/` for `train.average_last`); each schedule is then
compared at its own best peak LR, paired by seed. Why tune each: at the same peak, WSD and a constant LR
integrate more learning rate than cosine (reported per schedule), which alone can favour them.

- `cosine`: `cosine_with_min_lr` to 10% of the peak;
- `wsd`: `warmup_stable_decay`, the last 20% of the steps decayed (`1-sqrt`) to 10%;
- `constant_avg`: `constant_with_warmup`, a checkpoint every tenth of the run, the last 4 averaged
  (`train.average_last`); scored from the averaged weights (its last weights are reported too).

    python examples/experiments/schedules.py --output outputs/schedules          # the full experiment
    python examples/experiments/schedules.py --quick --output /tmp/q             # checks the script
    python examples/experiments/schedules.py --analyse-only --results docs/experiments/schedules/results.json --output DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from harness import (  # noqa: E402  (next to this script)
    Results,
    base_run_config,
    default_corpus,
    describe,
    execute,
    fmt,
    paired,
    paper_weights,
    prepare_sources,
    provenance,
    save_figure,
    summary_head,
    table_row,
    train_run,
)

logger = logging.getLogger("schedules")

SCHEDULES = ("cosine", "wsd", "constant_avg")
BASELINE = "cosine"


@dataclass
class RunSpec:
    schedule: str
    learning_rate: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.schedule}_lr{self.learning_rate:g}_s{self.seed}"


@dataclass
class Settings:
    corpus: str
    output: str
    steps: int = 60
    seq_len: int = 64
    batch_size: int = 4
    learning_rates: list[float] = field(default_factory=lambda: [5e-4, 1e-3, 2e-3, 4e-3, 8e-3])
    learning_rate: float = 2e-3
    """unused (each run sets its own peak); kept for the shared run config"""
    warmup_fraction: float = 0.05
    min_lr_rate: float = 0.1
    wsd_decay_fraction: float = 0.2
    average_last: int = 4
    """constant_avg: checkpoints averaged (one saved every steps / 10)"""
    vocab_size: int = 4096
    tokenizer_documents: int = 300
    code_files: int = 200
    held_out_share: float = 0.07
    heldout_documents: int = 50
    tokens_per_document: int = 32
    eval_every: int = 10
    eval_batch_size: int = 64
    """windows per evaluation forward pass (fewer, larger passes: less Python overhead per window)"""
    logging_steps: int = 5
    seeds: int = 3
    jobs: int = 2
    schedules: list[str] = field(default_factory=lambda: list(SCHEDULES))


QUICK = {
    "steps": 20,
    "seq_len": 64,
    "batch_size": 2,
    "learning_rates": [2e-3, 8e-3],
    "vocab_size": 512,
    "tokenizer_documents": 20,
    "code_files": 30,
    "held_out_share": 0.25,
    "heldout_documents": 2,
    "tokens_per_document": 16,
    "eval_every": 10,
    "logging_steps": 2,
    "average_last": 2,
    "seeds": 1,
    "jobs": 2,
}


def run_config(spec: RunSpec, settings: Settings, prepared: dict[str, Any]) -> dict[str, Any]:
    """The shared run config on the paper mix; the cell changes only the LR schedule, its peak and averaging."""
    config = base_run_config(spec.name, spec.seed, settings, prepared, paper_weights(prepared["names"]))
    optimizer, train = config["optimizer"], config["train"]
    optimizer.update(learning_rate=spec.learning_rate, min_lr_rate=settings.min_lr_rate)
    if spec.schedule == "cosine":
        optimizer["lr_scheduler_type"] = "cosine_with_min_lr"
    elif spec.schedule == "wsd":
        optimizer.update(lr_scheduler_type="warmup_stable_decay", decay_fraction=settings.wsd_decay_fraction)
    else:
        optimizer["lr_scheduler_type"] = "constant_with_warmup"
        train.update(save_steps=max(1, settings.steps // 10), save_total_limit=None, average_last=settings.average_last)
    return config


def train_one(spec: RunSpec, settings: Settings, prepared: dict[str, Any]) -> dict[str, Any]:
    config = run_config(spec, settings, prepared)
    return {"spec": asdict(spec), **train_run(config, prepared, settings.output, settings.jobs)}


def grid(settings: Settings) -> list[RunSpec]:
    """Seed by seed, so a stopped sweep still has every schedule x LR cell at a few seeds."""
    return [
        RunSpec(schedule, lr, seed)
        for seed in range(settings.seeds)
        for lr in settings.learning_rates
        for schedule in settings.schedules
    ]


# -- analysis ----------------------------------------------------------------------------------------------------


def training_weighted(values: dict[str, float]) -> float:
    """The mean over sources weighted by the training mix (the paper mix: every run here trains on it)."""
    weights = paper_weights(sorted(values))
    return sum(values[n] * weights[n] for n in values)


def unweighted(values: dict[str, float]) -> float:
    return statistics.fmean(values.values())


MEANS = {"training-weighted": training_weighted, "unweighted": unweighted}


def final(run: dict[str, Any], metric: str, mean: str, averaged: bool = True) -> float:
    """The final held-out value of a run; for constant_avg the averaged weights' unless `averaged` is False."""
    point = run["averaged_heldout"] if averaged and run["averaged_heldout"] else run["heldout"][-1]
    return MEANS[mean](point[metric])


def cells(data: dict[str, Any]) -> dict[tuple[str, float], dict[int, dict[str, Any]]]:
    out: dict[tuple[str, float], dict[int, dict[str, Any]]] = {}
    for run in data["runs"].values():
        spec = run["spec"]
        out.setdefault((spec["schedule"], spec["learning_rate"]), {})[spec["seed"]] = run
    return out


def analyse(data: dict[str, Any]) -> dict[str, Any]:
    """The LR x schedule table (primary: training-weighted mean bpb), each schedule's best peak LR (lowest mean),
    the paired differences against cosine at the best LRs and at every common LR, the averaging gain, and the
    integrated LR (sum of the per-step LR, also as a multiple of cosine's at the same peak)."""
    table = cells(data)
    lrs = sorted({lr for _, lr in table})
    out: dict[str, Any] = {"learning_rates": lrs, "table": {}, "best": {}, "paired_best": {}, "paired_same_lr": {}}
    for (schedule, lr), runs in sorted(table.items()):
        out["table"][f"{schedule}@{lr:g}"] = {
            **{
                f"{metric}/{mean}": describe([final(r, metric, mean) for r in runs.values()])
                for metric in ("bpb", "loss")
                for mean in MEANS
            },
            "integrated_lr": statistics.fmean(r["integrated_lr"] for r in runs.values()),
            "seeds": sorted(runs),
        }
    for schedule in SCHEDULES:
        candidates = {lr: out["table"][f"{schedule}@{lr:g}"] for s, lr in table if s == schedule}
        if candidates:
            best = min(candidates, key=lambda lr: candidates[lr]["bpb/training-weighted"]["mean"])
            out["best"][schedule] = {
                "learning_rate": best,
                "at_grid_edge": best in (lrs[0], lrs[-1]),
                "integrated_lr": candidates[best]["integrated_lr"],
            }
    base = out["best"].get(BASELINE)

    def by_seed(schedule: str, lr: float, metric: str, mean: str, averaged: bool = True) -> dict[int, float]:
        return {s: final(r, metric, mean, averaged) for s, r in table.get((schedule, lr), {}).items()}

    for schedule, best in out["best"].items():
        if base and schedule != BASELINE:
            out["paired_best"][f"{schedule} - {BASELINE}"] = {
                f"{metric}/{mean}": paired(
                    by_seed(schedule, best["learning_rate"], metric, mean),
                    by_seed(BASELINE, base["learning_rate"], metric, mean),
                )
                for metric in ("bpb", "loss")
                for mean in MEANS
            }
            for lr in lrs:
                out["paired_same_lr"][f"{schedule} - {BASELINE} @ {lr:g}"] = paired(
                    by_seed(schedule, lr, "bpb", "training-weighted"), by_seed(BASELINE, lr, "bpb", "training-weighted")
                )
        if base:
            # the integrated LR relative to cosine's at the same peak (the schedule's shape, whatever the peak)
            same = out["table"].get(f"{BASELINE}@{best['learning_rate']:g}")
            best["integrated_lr_vs_cosine_same_peak"] = best["integrated_lr"] / same["integrated_lr"] if same else None
            best["integrated_lr_vs_best_cosine"] = best["integrated_lr"] / base["integrated_lr"]
    if "constant_avg" in out["best"]:
        lr = out["best"]["constant_avg"]["learning_rate"]
        out["averaging_gain"] = {
            mean: paired(
                by_seed("constant_avg", lr, "bpb", mean), by_seed("constant_avg", lr, "bpb", mean, averaged=False)
            )
            for mean in MEANS
        }
    out["cpu_s"] = sum(r["cpu_s"] for r in data["runs"].values())
    out["runs"] = len(data["runs"])
    return out


def summary(data: dict[str, Any]) -> str:
    """summary.md: provenance, then every table the docs quote (all numbers from `analyse`)."""
    a = analyse(data)
    title = "# Schedules: summary (generated by `examples/experiments/schedules.py --analyse-only`; do not edit)"
    lines = summary_head(title, data, a["runs"], a["cpu_s"])
    lines += [
        "- values: final held-out bits per byte (constant_avg: of the averaged weights), mean ± standard error "
        "[95% t-interval of the mean] (n = seeds); training-weighted = weighted by the training mix (the paper "
        "mix); lower is better",
        "",
        "## Peak LR x schedule",
        "",
        table_row("schedule @ peak LR", ["bpb training-weighted", "bpb unweighted", "integrated LR (sum over steps)"]),
        table_row("---", ["---"] * 3),
    ]
    for key, row in a["table"].items():
        cells_ = [fmt(row["bpb/training-weighted"]), fmt(row["bpb/unweighted"]), f"{row['integrated_lr']:.4f}"]
        lines.append(table_row(key, cells_))
    lines += ["", "## Each schedule at its best peak LR (lowest mean training-weighted bpb)", ""]
    lines += [
        table_row(
            "schedule",
            ["best peak LR", "at the grid's edge", "integrated LR", "vs cosine, same peak", "vs cosine at its best"],
        ),
        table_row("---", ["---"] * 5),
    ]
    for schedule, best in a["best"].items():
        ratio = best.get("integrated_lr_vs_cosine_same_peak")
        vs_best = best.get("integrated_lr_vs_best_cosine")
        lines.append(
            table_row(
                schedule,
                [
                    f"{best['learning_rate']:g}",
                    "yes" if best["at_grid_edge"] else "no",
                    f"{best['integrated_lr']:.4f}",
                    f"{ratio:.2f}x" if ratio else "n/a",
                    f"{vs_best:.2f}x" if vs_best else "n/a",
                ],
            )
        )
    lines += ["", "## Paired by seed, each at its best peak LR", ""]
    lines += [
        table_row("difference", [f"{m} {mean}" for m in ("bpb", "loss") for mean in MEANS]),
        table_row("---", ["---"] * 4),
    ]
    for key, row in a["paired_best"].items():
        lines.append(
            table_row(
                key,
                [
                    f"{fmt(row[f'{m}/{mean}'])}, {row[f'{m}/{mean}']['below_zero']} below 0"
                    for m in ("bpb", "loss")
                    for mean in MEANS
                ],
            )
        )
    lines += ["", "## Paired by seed at the same peak LR (bpb, training-weighted)", ""]
    lines += [table_row("difference", ["value"]), table_row("---", ["---"])]
    for key, row in a["paired_same_lr"].items():
        lines.append(table_row(key, [f"{fmt(row)}, {row['below_zero']} below 0"]))
    if "averaging_gain" in a:
        lines += ["", "## Checkpoint averaging at constant_avg's best LR: averaged minus last weights (bpb)", ""]
        lines += [table_row("mean over sources", ["value"]), table_row("---", ["---"])]
        for mean, row in a["averaging_gain"].items():
            lines.append(table_row(mean, [f"{fmt(row)}, {row['below_zero']} below 0"]))
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, written = analyse(data), []
    if not a["table"]:
        return written
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for schedule in SCHEDULES:
        rows = [(lr, a["table"].get(f"{schedule}@{lr:g}")) for lr in a["learning_rates"]]
        rows = [(lr, r["bpb/training-weighted"]) for lr, r in rows if r]
        if rows:
            axes[0].errorbar(
                [lr for lr, _ in rows],
                [d["mean"] for _, d in rows],
                yerr=[d["se"] or 0 for _, d in rows],
                label=schedule,
                marker="o",
                capsize=3,
            )
    axes[0].set(xscale="log", xlabel="peak LR", ylabel="final held-out bpb (training-weighted)", title="LR sweep")
    axes[0].set_xticks(a["learning_rates"], [f"{lr:g}" for lr in a["learning_rates"]])
    axes[0].minorticks_off()
    axes[0].legend()
    table = cells(data)
    for schedule, best in a["best"].items():
        runs = table[(schedule, best["learning_rate"])].values()
        run = next(iter(runs))
        axes[1].plot(
            range(1, len(run["learning_rates"]) + 1),
            run["learning_rates"],
            label=f"{schedule} @ {best['learning_rate']:g}",
        )
    axes[1].set(xlabel="step", ylabel="learning rate", title="each schedule at its best peak")
    axes[1].legend()
    written.append(save_figure(110, fig, out / "schedules.png"))
    return written


def write_outputs(data: dict[str, Any], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = summary(data)
    (out / "summary.md").write_text(text)
    plot(data, out)
    return text


# -- the experiment ---------------------------------------------------------------------------------------------


def _log(run: dict[str, Any]) -> None:
    logger.info("%-28s bpb %.4f  (%.0f s)", run["name"], final(run, "bpb", "training-weighted"), run["wall_s"])


def parse_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=default_corpus(), help="folder of *_LANG.jsonl(.gz) files")
    parser.add_argument("--output", default=str(REPO / "outputs" / "schedules"))
    parser.add_argument("--quick", action="store_true", help="20 steps, 2 LRs, 1 seed, tiny shapes: checks the script")
    parser.add_argument("--analyse-only", action="store_true", help="summary.md and figures from --results")
    parser.add_argument("--results", help="results.json to analyse (default: OUTPUT/results.json)")
    for name in ("steps", "batch-size", "seeds", "jobs", "eval-every"):
        parser.add_argument(f"--{name}", type=int)
    parser.add_argument("--learning-rates", type=float, nargs="+")
    parser.add_argument("--schedules", nargs="+", choices=SCHEDULES)
    args = parser.parse_args(argv)
    values = dict(QUICK) if args.quick else {}
    for key in ("steps", "batch_size", "seeds", "jobs", "eval_every", "learning_rates", "schedules"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    settings = Settings(corpus=args.corpus, output=args.output, **values)
    if not args.analyse_only and not Path(settings.corpus).is_dir():
        raise SystemExit(f"--corpus {settings.corpus} is not a folder.")
    if settings.steps < settings.eval_every or settings.jobs < 1 or settings.seeds < 1:
        raise SystemExit("--steps must be >= --eval-every; --jobs and --seeds >= 1.")
    if settings.steps // max(1, settings.steps // 10) < settings.average_last:
        raise SystemExit(f"--steps {settings.steps} leaves fewer than {settings.average_last} checkpoints to average.")
    return settings, args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings, args = parse_args(argv)
    out = Path(settings.output)
    if args.analyse_only:
        data = json.loads(Path(args.results or out / "results.json").read_text())
        print(write_outputs(data, out))
        return data
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out / "results.json", {"settings": asdict(settings), "provenance": provenance(argv)})
    started = time.time()
    prepared = prepare_sources(settings)
    execute(grid(settings), train_one, settings, prepared, results, _log)
    results.data["wall_s"] = results.data.get("wall_s", 0.0) + time.time() - started
    results.save()
    print(write_outputs(results.data, out))
    return results.data


if __name__ == "__main__":
    main()
