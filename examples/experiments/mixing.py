"""Mixing at CPU scale: what does loss-driven mixing (EXP3) change, against which static mixes?

Arms (every run through `wonton_hf`'s normal path: run config -> `build_trainer` -> the HF Trainer with the
Online Data Scheduler, its callbacks and the in-loop held-out evaluation -> `run`):

- `static_paper`: the Wonton report's mix (English ~73% with code at 8.6%), fixed;
- `exp3_lr1`: `Exp3Feedback(learning_rate=1.0, update_every=1)` on top of the paper mix (the current defaults);
  `exp3_lr0.3` / `exp3_lr3`: the same at step sizes 0.3 and 3 (the step-size sweep, fewer seeds);
- `static_exp3avg`: a static mix at the time-averaged weights of the `exp3_lr1` run with the same seed (phase 2:
  it needs those runs first): whatever EXP3 gains over it comes from the dynamics, not the average mix;
- `temperature`: the paper mix sampled at temperature T=3 (p ~ share^(1/T), as XLM-R / mT5 sample languages).

Metric: held-out loss and bits per byte per source (>= 50 documents per source, the package's hash split),
scored every `--eval-every` steps, summarised as the unweighted mean over sources and the paper-mix-weighted mean
(see docs/experiments/mixing.md for the plan).

    python examples/experiments/mixing.py --output outputs/mixing            # the full experiment
    python examples/experiments/mixing.py --quick --output /tmp/q            # checks the script, measures nothing
    python examples/experiments/mixing.py --analyse-only --results docs/experiments/mixing/results.json --output DIR
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
    mean_weights,
    paired,
    paper_weights,
    prepare_sources,
    provenance,
    save_figure,
    summary_head,
    table_row,
    train_run,
)

logger = logging.getLogger("mixing")

TEMPERATURE = 3.0
"""XLM-R / mT5-style sampling temperature over the paper mix's shares"""
EXP3_RATES = {"exp3_lr0.3": 0.3, "exp3_lr1": 1.0, "exp3_lr3": 3.0}
"""EXP3 step sizes (per nat of smoothed loss) of the sweep; `exp3_lr1` is the package default and the main arm"""
MAIN_ARMS = ("static_paper", "exp3_lr1", "static_exp3avg", "temperature")
SWEEP_ARMS = ("exp3_lr0.3", "exp3_lr3")
BASELINE = "static_paper"


@dataclass
class RunSpec:
    arm: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm}_s{self.seed}"


@dataclass
class Settings:
    corpus: str
    output: str
    steps: int = 100
    seq_len: int = 64
    batch_size: int = 4
    learning_rate: float = 2e-3
    warmup_fraction: float = 0.05
    vocab_size: int = 4096
    tokenizer_documents: int = 300
    code_files: int = 200
    """top-level standard-library modules (all of them: ~170), cut into ~4 kB documents"""
    held_out_share: float = 0.07
    """share of every source's documents held out by the package's hash split"""
    heldout_documents: int = 50
    """held-out documents scored per source"""
    tokens_per_document: int = 32
    """each held-out document's first tokens scored"""
    eval_every: int = 10
    eval_batch_size: int = 64
    """windows per evaluation forward pass (fewer, larger passes: less Python overhead per window)"""
    logging_steps: int = 5
    seeds: int = 5
    """seeds of the main arms"""
    sweep_seeds: int = 3
    """seeds of the EXP3 step-size sweep (exp3_lr1 shares its first ones)"""
    exp3_update_every: int = 1
    jobs: int = 2
    arms: list[str] = field(default_factory=lambda: [*MAIN_ARMS, *SWEEP_ARMS])


QUICK = {
    "steps": 30,
    "seq_len": 64,
    "batch_size": 2,
    "vocab_size": 512,
    "tokenizer_documents": 20,
    "code_files": 30,
    "held_out_share": 0.25,
    "heldout_documents": 2,
    "tokens_per_document": 16,
    "eval_every": 10,
    "logging_steps": 2,
    "seeds": 1,
    "sweep_seeds": 1,
    "jobs": 2,
}
"""30 steps: EXP3 keeps the exploration floor's exactly uniform policy for ~K ln K = 20 updates with 9 sources,
so the quick run needs more than 20 steps for the weights to move."""


# -- mixes -----------------------------------------------------------------------------------------------------


def temperature_weights(names: list[str], temperature: float = TEMPERATURE) -> dict[str, float]:
    """p_i ~ q_i^(1/T) over the paper mix's shares q (the report's shares stand for the sources' sizes: the local
    files are all about the same size, so their own sizes would give a uniform mix at any T)."""
    paper = paper_weights(names)
    scaled = {n: w ** (1 / temperature) for n, w in paper.items()}
    total = sum(scaled.values())
    return {n: v / total for n, v in scaled.items()}


def arm_weights(spec: RunSpec, names: list[str], results: dict[str, Any]) -> dict[str, float]:
    if spec.arm == "temperature":
        return temperature_weights(names)
    if spec.arm == "static_exp3avg":
        source = results["runs"].get(RunSpec("exp3_lr1", spec.seed).name)
        if source is None:
            raise SystemExit(f"{spec.name} needs {RunSpec('exp3_lr1', spec.seed).name} first (phase 2).")
        return mean_weights(source)
    return paper_weights(names)


# -- runs --------------------------------------------------------------------------------------------------------


def run_config(spec: RunSpec, settings: Settings, prepared: dict[str, Any], weights: dict[str, float]) -> dict:
    """The shared run config; the arm changes only the weights and the feedback."""
    config = base_run_config(spec.name, spec.seed, settings, prepared, weights)
    if spec.arm in EXP3_RATES:
        config["data"]["feedback"] = {"learning_rate": EXP3_RATES[spec.arm], "update_every": settings.exp3_update_every}
    return config


def train_one(spec: RunSpec, settings: Settings, prepared: dict[str, Any]) -> dict[str, Any]:
    """One arm at one seed (in a worker process); the weights come from `prepared` (phase 2 needs phase 1's)."""
    config = run_config(spec, settings, prepared, prepared["weights"][spec.name])
    return {"spec": asdict(spec), **train_run(config, prepared, settings.output, settings.jobs)}


def grid(settings: Settings) -> list[list[RunSpec]]:
    """Batches run one after the other, seed by seed (a stopped sweep still has every arm at its first seeds):
    EXP3 and the paper mix, then the static mix at that EXP3 run's average weights, the temperature mix and the
    step-size sweep."""
    batches = []
    for seed in range(max(settings.seeds, settings.sweep_seeds)):
        main = seed < settings.seeds
        first = [a for a in ("exp3_lr1", "static_paper") if main and a in settings.arms]
        then = [a for a in ("static_exp3avg", "temperature") if main and a in settings.arms]
        then += [a for a in SWEEP_ARMS if seed < settings.sweep_seeds and a in settings.arms]
        batches += [[RunSpec(a, seed) for a in arms] for arms in (first, then) if arms]
    return batches


# -- analysis ----------------------------------------------------------------------------------------------------


def weighted(values: dict[str, float], weights: dict[str, float] | None) -> float:
    """The mean over sources: unweighted (`weights` None) or with the given weights (normalised)."""
    if weights is None:
        return statistics.fmean(values.values())
    total = sum(weights[n] for n in values)
    return sum(values[n] * weights[n] for n in values) / total


def final_point(run: dict[str, Any]) -> dict[str, Any]:
    return run["heldout"][-1]


def by_arm(data: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for run in data["runs"].values():
        out.setdefault(run["spec"]["arm"], {})[run["spec"]["seed"]] = run
    return out


MEANS = {"unweighted": None, "paper-weighted": "paper"}


def analyse(data: dict[str, Any]) -> dict[str, Any]:
    """Every number the summary prints: per arm, per metric (loss, bpb) and mean (unweighted, paper-weighted),
    the final value by seed and its mean ± SE; paired differences by seed against `static_paper` and between EXP3
    and the static mix at its own average weights; per-source finals; the mixes' average weights."""
    arms = by_arm(data)
    names = sorted(next(iter(data["runs"].values()))["heldout"][-1]["bpb"]) if data["runs"] else []
    paper = paper_weights(names)
    out: dict[str, Any] = {"names": names, "paper_weights": paper, "arms": {}, "paired": {}, "per_source": {}}

    def finals(arm: str, metric: str, mean: str) -> dict[int, float]:
        w = paper if MEANS[mean] else None
        return {s: weighted(final_point(r)[metric], w) for s, r in sorted(arms.get(arm, {}).items())}

    for arm in [a for a in (*MAIN_ARMS, *SWEEP_ARMS) if a in arms]:
        out["arms"][arm] = {
            f"{metric}/{mean}": describe(list(finals(arm, metric, mean).values()))
            for metric in ("bpb", "loss")
            for mean in MEANS
        }
        out["arms"][arm]["mean_weights"] = {
            n: statistics.fmean(mean_weights(r)[n] for r in arms[arm].values()) for n in names
        }
        out["per_source"][arm] = {n: describe([final_point(r)["bpb"][n] for r in arms[arm].values()]) for n in names}
    comparisons = [(a, BASELINE) for a in (*MAIN_ARMS, *SWEEP_ARMS) if a != BASELINE]
    comparisons.append(("exp3_lr1", "static_exp3avg"))
    for a, b in comparisons:
        if a in arms and b in arms:
            out["paired"][f"{a} - {b}"] = {
                f"{metric}/{mean}": paired(finals(a, metric, mean), finals(b, metric, mean))
                for metric in ("bpb", "loss")
                for mean in MEANS
            }
    # the step-size sweep on its own seeds only (exp3_lr1 has more): like against like
    present = [set(arms[a]) for a in EXP3_RATES if a in arms]
    sweep_seeds = sorted(set.intersection(*present)) if present else []
    out["sweep"] = {"seeds": sweep_seeds}
    # where a difference comes from: per source, paired by seed, against the paper mix
    out["per_source_paired"] = {
        f"{arm} - {BASELINE}": {
            n: paired(
                {s: final_point(r)["bpb"][n] for s, r in arms[arm].items()},
                {s: final_point(r)["bpb"][n] for s, r in arms[BASELINE].items()},
            )
            for n in names
        }
        for arm in ("exp3_lr1", "static_exp3avg", "temperature")
        if arm in arms and BASELINE in arms
    }
    for arm in [a for a in EXP3_RATES if a in arms]:
        out["sweep"][arm] = {
            f"bpb/{mean}": paired(
                {s: v for s, v in finals(arm, "bpb", mean).items() if s in sweep_seeds},
                finals(BASELINE, "bpb", mean),
            )
            for mean in MEANS
        }
    out["cpu_s"] = sum(r["cpu_s"] for r in data["runs"].values())
    out["runs"] = len(data["runs"])
    return out


def summary(data: dict[str, Any]) -> str:
    """summary.md: provenance, then every table the docs quote (all numbers from `analyse`)."""
    a = analyse(data)
    title = "# Mixing: summary (generated by `examples/experiments/mixing.py --analyse-only`; do not edit)"
    lines = summary_head(title, data, a["runs"], a["cpu_s"])
    lines += [
        "- values: final held-out metric (last evaluation), mean ± standard error [95% t-interval of the mean] "
        "(n = seeds); paired rows: the difference by seed, mean ± SE [95% t-interval] (n), and how many seeds "
        "are below zero (lower is better)",
        "",
        "## Final held-out metric per arm",
        "",
        table_row("arm", [f"{metric} {mean}" for metric in ("bpb", "loss") for mean in MEANS]),
        table_row("---", ["---"] * 4),
    ]
    for arm, row in a["arms"].items():
        lines.append(table_row(arm, [fmt(row[f"{m}/{mean}"]) for m in ("bpb", "loss") for mean in MEANS]))
    lines += [
        "",
        "## Paired by seed",
        "",
        table_row("difference", [f"{m} {mean}" for m in ("bpb", "loss") for mean in MEANS]),
    ]
    lines.append(table_row("---", ["---"] * 4))
    for key, row in a["paired"].items():
        cells = [
            f"{fmt(row[f'{m}/{mean}'])}, {row[f'{m}/{mean}']['below_zero']} below 0"
            for m in ("bpb", "loss")
            for mean in MEANS
        ]
        lines.append(table_row(key, cells))
    lines += ["", f"## EXP3 step size (seeds {a['sweep']['seeds']}), bpb minus static_paper, paired", ""]
    lines += [table_row("step size", list(MEANS)), table_row("---", ["---"] * 2)]
    for arm in EXP3_RATES:
        if arm in a["sweep"]:
            row = a["sweep"][arm]
            lines.append(
                table_row(arm, [f"{fmt(row[f'bpb/{m}'])}, {row[f'bpb/{m}']['below_zero']} below 0" for m in MEANS])
            )
    names = a["names"]
    lines += ["", "## Final bits per byte per source (mean ± SE over seeds)", ""]
    lines += [table_row("arm", names), table_row("---", ["---"] * len(names))]
    for arm, row in a["per_source"].items():
        lines.append(table_row(arm, [f"{row[n]['mean']:.3f} ± {row[n]['se'] or 0:.3f}" for n in names]))
    lines += ["", "## Per source, paired by seed: bits per byte minus static_paper's (mean ± SE, n; seeds below 0)", ""]
    lines += [table_row("difference", names), table_row("---", ["---"] * len(names))]
    for key, row in a["per_source_paired"].items():
        lines.append(
            table_row(
                key,
                [
                    f"{row[n]['mean']:+.3f} ± {row[n]['se'] or 0:.3f} (n={row[n]['n']}, {row[n]['below_zero']})"
                    for n in names
                ],
            )
        )
    lines += ["", "## Average mixture weights (mean over seeds of each run's time-averaged weights)", ""]
    lines += [table_row("arm", names), table_row("---", ["---"] * len(names))]
    lines.append(
        table_row("paper mix (weights of the paper-weighted mean)", [f"{a['paper_weights'][n]:.3f}" for n in names])
    )
    for arm, row in a["arms"].items():
        lines.append(table_row(arm, [f"{row['mean_weights'][n]:.3f}" for n in names]))
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms, written = by_arm(data), []
    if not arms:
        return written
    names = sorted(next(iter(data["runs"].values()))["heldout"][-1]["bpb"])
    paper = paper_weights(names)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (mean, w) in zip(axes, (("unweighted", None), ("paper-weighted", paper)), strict=True):
        for arm in (*MAIN_ARMS, *SWEEP_ARMS):
            runs = list(arms.get(arm, {}).values())
            if runs:
                steps = [p["step"] for p in runs[0]["heldout"]]
                curves = [[weighted(p["bpb"], w) for p in r["heldout"]] for r in runs]
                ax.plot(
                    steps, [statistics.fmean(v) for v in zip(*curves, strict=False)], label=f"{arm} (n={len(runs)})"
                )
        ax.set(xlabel="step", ylabel=f"held-out bits per byte, {mean} mean", title=f"{mean} mean over sources")
    axes[1].legend(fontsize=8)
    written.append(save_figure(110, fig, out / "heldout_bpb.png"))
    run = arms.get("exp3_lr1", {}).get(0)
    if run:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for name, points in sorted(run["weights"].items()):
            ax.plot([s for s, _ in points], [w for _, w in points], label=name)
        ax.set(xlabel="step", ylabel="weight", title="exp3_lr1, seed 0: mixture weights", yscale="log")
        ax.legend(fontsize=7, ncol=3)
        written.append(save_figure(110, fig, out / "exp3_weights.png"))
    return written


def write_outputs(data: dict[str, Any], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = summary(data)
    (out / "summary.md").write_text(text)
    plot(data, out)
    return text


# -- the experiment ---------------------------------------------------------------------------------------------


def _log(run: dict[str, Any]) -> None:
    logger.info("%-28s bpb %.4f  (%.0f s)", run["name"], weighted(run["heldout"][-1]["bpb"], None), run["wall_s"])


def parse_args(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=default_corpus(), help="folder of *_LANG.jsonl(.gz) files")
    parser.add_argument("--output", default=str(REPO / "outputs" / "mixing"))
    parser.add_argument("--quick", action="store_true", help="30 steps, 1 seed, tiny shapes: checks the script")
    parser.add_argument("--analyse-only", action="store_true", help="summary.md and figures from --results")
    parser.add_argument("--results", help="results.json to analyse (default: OUTPUT/results.json)")
    for name in ("steps", "batch-size", "seeds", "sweep-seeds", "jobs", "eval-every", "heldout-documents"):
        parser.add_argument(f"--{name}", type=int)
    parser.add_argument("--arms", nargs="+", choices=[*MAIN_ARMS, *SWEEP_ARMS])
    args = parser.parse_args(argv)
    values = dict(QUICK) if args.quick else {}
    for key in ("steps", "batch_size", "seeds", "sweep_seeds", "jobs", "eval_every", "heldout_documents", "arms"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    settings = Settings(corpus=args.corpus, output=args.output, **values)
    if not args.analyse_only and not Path(settings.corpus).is_dir():
        raise SystemExit(f"--corpus {settings.corpus} is not a folder.")
    if settings.steps < settings.eval_every or settings.jobs < 1 or settings.seeds < 1:
        raise SystemExit("--steps must be >= --eval-every; --jobs and --seeds >= 1.")
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
    for batch in grid(settings):
        prepared["weights"] = {s.name: arm_weights(s, prepared["names"], results.data) for s in batch}
        execute(batch, train_one, settings, prepared, results, _log)
    results.data["wall_s"] = results.data.get("wall_s", 0.0) + time.time() - started
    results.save()
    print(write_outputs(results.data, out))
    return results.data


if __name__ == "__main__":
    main()
