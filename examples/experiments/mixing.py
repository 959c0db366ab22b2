"""Mixing science at CPU scale: does loss-driven mixing save steps, and does a curriculum keep its gain under LR decay?

Two experiments on small Wonton models, every run through `wonton_hf`'s normal path (run config ->
`build_trainer` -> the HF Trainer with the Online Data Scheduler, its callbacks, `run`):

1. Loss-driven mixing (ODM, arXiv 2312.02406): static weights (the paper's language mix, and uniform) against
   `Exp3Feedback` on top of each. Per-source held-out loss against tokens, the steps each arm needs to reach
   its static arm's final mean held-out loss, the weights' trajectory.
2. Curriculum x LR schedule (arXiv 2511.18903): sources ordered easy -> hard by their gzip compression ratio
   through a linear `WeightSchedule` whose time-average is the shuffled mix, against the shuffled mix, each
   under cosine decay, WSD, and a constant LR whose last checkpoints are averaged (`train.average_last`).

    python examples/experiments/mixing.py                                # the full experiment (see docs/experiments.md)
    python examples/experiments/mixing.py --quick --output /tmp/q        # 6 steps per run: checks the script
    python examples/experiments/mixing.py --analyse-only --output outputs/mixing

The corpus (`--corpus`: one `*_LANG.jsonl(.gz)` per language) and a code source (Python's standard library,
one document per file) are split with every 10th document held out; one tokenizer is trained on the training
split; a fixed set of held-out windows per source is scored every `--eval-every` steps by a callback.
`results.json` is rewritten after every run (a rerun skips finished runs).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import statistics
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from harness import (  # noqa: E402  (next to this script)
    Results,
    default_corpus,
    ensure_tokenizer,
    execute,
    heldout_loss,
    heldout_windows,
    run_log,
    save_figure,
    split_corpus,
)

logger = logging.getLogger("mixing")

PAPER_MIX = {"en": 80.1, "zh": 6.3, "ja": 6.3, "de": 1.6, "fr": 1.5, "it": 1.4, "ko": 1.4, "es": 1.4}
"""The Wonton report's language shares (per cent of the multilingual part), as in benchmarks/data_scheduler_throughput.py."""
PAPER_CODE_SHARE = 0.086
"""Code's share of the report's Figure 1 mix (8.6%); the languages share the rest in PAPER_MIX's proportions."""

MIXING_ARMS = ("static_paper", "exp3_paper", "static_uniform", "exp3_uniform")
ORDERS = ("shuffled", "curriculum")
SCHEDULES = ("cosine", "wsd", "constant_avg")


@dataclass
class RunSpec:
    experiment: str
    """mixing | curriculum"""
    arm: str
    """a MIXING_ARMS name, or `<order>_<schedule>`"""
    seed: int

    @property
    def name(self) -> str:
        return f"{self.experiment}_{self.arm}_s{self.seed}"


@dataclass
class Settings:
    corpus: str
    output: str
    steps: int = 200
    seq_len: int = 128
    batch_size: int = 8
    learning_rate: float = 2e-3
    warmup_fraction: float = 0.05
    vocab_size: int = 4096
    tokenizer_documents: int = 300
    code_files: int = 600
    heldout_windows: int = 8
    """held-out windows per source"""
    eval_every: int = 20
    logging_steps: int = 5
    mixing_seeds: int = 3
    curriculum_seeds: int = 2
    experiments: list[str] = field(default_factory=lambda: ["mixing", "curriculum"])
    exp3: dict[str, Any] = field(default_factory=lambda: {"update_every": 1, "learning_rate": 1.0})
    """`Exp3Feedback` options of the exp3 arms, spelled out so the experiment does not follow later default changes.
    They became the package defaults after this experiment; the former ones (update_every 10, ODM's decaying step)
    left the policy exactly uniform for the first 20 updates (200 steps) with 9 sources"""
    curriculum_strength: float = 1.6
    """start weight of a source = base x (1 + strength x (0.5 - difficulty rank)); the end mirrors it"""
    wsd_decay_fraction: float = 0.2
    average_last: int = 4
    """constant-LR cells: checkpoints averaged (saved every steps / 10)"""
    jobs: int = 2


QUICK = {
    "steps": 6,
    "seq_len": 64,
    "batch_size": 2,
    "vocab_size": 512,
    "tokenizer_documents": 20,
    "code_files": 30,
    "heldout_windows": 1,
    "eval_every": 3,
    "logging_steps": 1,
    "mixing_seeds": 1,
    "curriculum_seeds": 1,
    "average_last": 2,
    "jobs": 1,
}


# -- data -------------------------------------------------------------------------------------------------------


def split_code(target: Path, files: int, every: int = 10) -> dict[str, str]:
    """The first `files` modules of the standard library (sorted) as a jsonl source, every `every`-th held out."""
    train, heldout = target / "train_code.jsonl", target / "heldout_code.jsonl"
    if not heldout.is_file():
        paths = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:files]
        with open(f"{train}.tmp", "w", encoding="utf-8") as tr, open(f"{heldout}.tmp", "w", encoding="utf-8") as ho:
            for i, path in enumerate(paths):
                line = json.dumps({"id": path.name, "text": path.read_text(encoding="utf-8", errors="replace")})
                (ho if i % every == 0 else tr).write(line + "\n")
        os.replace(f"{train}.tmp", train)
        os.replace(f"{heldout}.tmp", heldout)
    return {"train": str(train), "heldout": str(heldout)}


def compression_ratio(path: str, limit: int = 2_000_000) -> float:
    """gzip-compressed bytes per UTF-8 byte of a source's text: the difficulty measure of the curriculum.

    Why this measure: it is model-free, costs a second, and estimates the text's entropy per byte, which is
    what a language model's loss measures (a source gzip compresses well is one a small model predicts well).
    Sources are compared by rank, so the scripts' different byte-per-character rates matter only through it.
    """
    text = bytearray()
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            text += json.loads(line)["text"].encode("utf-8")
            if len(text) >= limit:
                break
    return len(gzip.compress(bytes(text), compresslevel=9)) / max(len(text), 1)


def base_weights(kind: str, names: list[str]) -> dict[str, float]:
    if kind == "uniform":
        return {n: 1.0 / len(names) for n in names}
    languages = {n: PAPER_MIX.get(n, 0.0) for n in names if n != "code"}
    total = sum(languages.values()) or 1.0
    weights = {n: (1 - PAPER_CODE_SHARE) * w / total for n, w in languages.items()}
    if "code" in names:
        weights["code"] = PAPER_CODE_SHARE
    return weights


def curriculum_points(
    weights: dict[str, float], difficulty: dict[str, float], strength: float, steps: int
) -> list[dict[str, Any]]:
    """Easy-heavy at step 0, hard-heavy at the last step, linear in between; each source's mean over the run is
    its `weights` value (the factors 1 +/- strength x (0.5 - rank) average to 1), so both orders see the same data
    (exactly for the uniform base used here, whose two points both sum to 1; a skewed base is renormalised)."""
    order = sorted(difficulty, key=difficulty.get)
    rank = {n: i / max(len(order) - 1, 1) for i, n in enumerate(order)}
    start = {n: weights[n] * (1 + strength * (0.5 - rank[n])) for n in weights}
    end = {n: weights[n] * (1 - strength * (0.5 - rank[n])) for n in weights}
    return [{"at": 0, "weights": start}, {"at": steps, "weights": end}]


def prepare(settings: Settings) -> dict[str, Any]:
    """Splits, tokenizer, held-out windows per source, difficulty: made once, shared by every run."""
    import torch

    out = Path(settings.output)
    splits = split_corpus(Path(settings.corpus), out / "data")
    splits["code"] = split_code(out / "data", settings.code_files)
    names = sorted(splits)

    def specs(part: str, only: str | None = None) -> list[dict[str, Any]]:
        return [{"name": n, "paths": [splits[n][part]], "weight": 1.0} for n in names if only in (None, n)]

    tokenizer_dir = ensure_tokenizer(
        out / f"tokenizer-{settings.vocab_size}", specs("train"), settings.tokenizer_documents, settings.vocab_size
    )
    heldout = out / f"heldout-{settings.heldout_windows}x{settings.seq_len}.pt"
    if not heldout.is_file():
        windows = {
            name: heldout_windows(specs("heldout", name), tokenizer_dir, settings.seq_len, settings.heldout_windows)
            for name in names
        }
        torch.save(windows, heldout)
    difficulty = {n: compression_ratio(splits[n]["train"]) for n in names}
    return {
        "splits": splits,
        "names": names,
        "tokenizer": str(tokenizer_dir),
        "heldout": str(heldout),
        "difficulty": difficulty,
    }


# -- one run ----------------------------------------------------------------------------------------------------


def run_config(spec: RunSpec, settings: Settings, prepared: dict[str, Any]) -> dict[str, Any]:
    """The run config a user would write in YAML; the arm changes only the weights, schedule, feedback and LR decay."""
    names = prepared["names"]
    if spec.experiment == "mixing":
        kind, base = spec.arm.split("_")[1], spec.arm.split("_")[0]
        weights, order, schedule = base_weights(kind, names), "shuffled", "cosine"
        feedback = dict(settings.exp3) if base == "exp3" else None
    else:
        order, schedule = spec.arm.split("_", 1)
        weights, feedback = base_weights("uniform", names), None
    steps = settings.steps
    optimizer: dict[str, Any] = {
        "learning_rate": settings.learning_rate,
        "min_lr_rate": 0.1,
        "warmup_steps": max(1, round(settings.warmup_fraction * steps)),
    }
    train: dict[str, Any] = {
        "max_steps": steps,
        "per_device_batch_size": settings.batch_size,
        "global_batch_tokens": settings.batch_size * settings.seq_len,
        "logging_steps": settings.logging_steps,
        "save_steps": steps * 10,
        "save_total_limit": None,
        "report_to": [],
        "seed": spec.seed,
        "use_cpu": True,
    }
    if schedule == "cosine":
        optimizer["lr_scheduler_type"] = "cosine_with_min_lr"
    elif schedule == "wsd":
        optimizer.update(lr_scheduler_type="warmup_stable_decay", decay_fraction=settings.wsd_decay_fraction)
    else:
        optimizer["lr_scheduler_type"] = "constant_with_warmup"
        train.update(save_steps=max(1, steps // 10), average_last=settings.average_last)
    data: dict[str, Any] = {
        "seq_len": settings.seq_len,
        "num_workers": 0,
        "feedback": feedback,
        "sources": [{"name": n, "paths": [prepared["splits"][n]["train"]], "weight": weights[n]} for n in names],
    }
    if order == "curriculum":
        points = curriculum_points(weights, prepared["difficulty"], settings.curriculum_strength, steps)
        data["schedule"] = {"points": points, "unit": "step", "interpolation": "linear"}
    return {
        "run_name": spec.name,
        "output_dir": str(Path(settings.output) / "runs"),
        "resume": "never",
        "model": {"preset": "wonton-tiny", "attn_implementation": "sdpa"},
        "tokenizer": {"path": prepared["tokenizer"]},
        "data": data,
        "optimizer": optimizer,
        "train": train,
        "monitors": {"stability": None, "throughput": None, "spike_guard": None},
    }


def heldout_losses(model: Any, windows: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Per source: token-weighted mean cross-entropy over its fixed held-out windows."""
    return {name: heldout_loss(model, batch) for name, batch in windows.items()}


def heldout_callback(windows: dict[str, Any], every: int, tokens_per_step: int) -> Any:
    """A `TrainerCallback` that scores the held-out windows at step 0, every `every` steps and at the end."""
    from transformers import TrainerCallback

    class HeldoutEval(TrainerCallback):
        def __init__(self) -> None:
            self.points: list[dict[str, Any]] = []

        def _score(self, step: int, model: Any) -> None:
            if not self.points or self.points[-1]["step"] != step:
                self.points.append(
                    {"step": step, "tokens": step * tokens_per_step, "losses": heldout_losses(model, windows)}
                )

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._score(state.global_step, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % every == 0 or state.global_step == state.max_steps:
                self._score(state.global_step, model)

    return HeldoutEval()


def train_one(spec: RunSpec, settings: Settings, prepared: dict[str, Any]) -> dict[str, Any]:
    """Build through `wonton_hf.training`, train with `run` (which writes final-averaged/ where asked), score."""
    import shutil

    import torch

    if settings.jobs > 1:
        torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM

    from wonton_hf.training import build_trainer, load_run_config, run

    config = load_run_config(None, [], **run_config(spec, settings, prepared))
    windows = torch.load(prepared["heldout"])
    started = time.process_time(), time.time()
    with run_log(settings.output, spec.name, settings.jobs):
        built = build_trainer(config)
        evaluator = heldout_callback(windows, settings.eval_every, config.train.global_batch_tokens)
        built.trainer.add_callback(evaluator)
        run(built)
        averaged = averaging = None
        if config.train.average_last:
            model = AutoModelForCausalLM.from_pretrained(config.run_dir / "final-averaged")
            averaged = heldout_losses(model, windows)
            averaging = json.loads((config.run_dir / "final-averaged" / "averaging.json").read_text())
    history = built.trainer.state.log_history
    shutil.rmtree(config.run_dir, ignore_errors=True)
    return {
        "name": spec.name,
        "spec": asdict(spec),
        "config": run_config(spec, settings, prepared),
        "heldout": evaluator.points,
        "averaged_heldout": averaged,
        "averaging": averaging,
        "weights": weight_series(history),
        "train_loss": [[e["step"], e["loss"]] for e in history if "loss" in e],
        "cpu_s": time.process_time() - started[0],
        "wall_s": time.time() - started[1],
    }


def weight_series(history: list[dict[str, Any]]) -> dict[str, list[list[float]]]:
    """source -> [[step, weight], ...] from the data tracker's `data/weight/<source>` log entries."""
    out: dict[str, list[list[float]]] = {}
    for entry in history:
        for key, value in entry.items():
            if key.startswith("data/weight/"):
                out.setdefault(key.split("/", 2)[2], []).append([entry["step"], value])
    return out


# -- analysis ---------------------------------------------------------------------------------------------------


def mean_loss(losses: dict[str, float]) -> float:
    """The unweighted mean over sources: every language (and code) counts the same, whatever its training share."""
    return statistics.fmean(losses.values())


def final_loss(run: dict[str, Any]) -> float:
    """The run's final mean held-out loss; for averaged runs, the averaged model's."""
    return mean_loss(run["averaged_heldout"] or run["heldout"][-1]["losses"])


def steps_to(run: dict[str, Any], target: float) -> float | None:
    """The first step (linear between evaluations) at which the mean held-out loss is <= `target`; None if never."""
    curve = [(p["step"], mean_loss(p["losses"])) for p in run["heldout"]]
    for (s0, l0), (s1, l1) in zip(curve, curve[1:], strict=False):
        if l1 <= target:
            return s1 if l0 == l1 else s0 + (s1 - s0) * (l0 - target) / (l0 - l1)
    return None


def _stats(values: list[float]) -> dict[str, Any]:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def analyse(data: dict[str, Any]) -> dict[str, Any]:
    runs = list(data["runs"].values())
    out: dict[str, Any] = {}
    mixing = [r for r in runs if r["spec"]["experiment"] == "mixing"]
    if mixing:
        arms: dict[str, Any] = {}
        for arm in MIXING_ARMS:
            mine = sorted((r for r in mixing if r["spec"]["arm"] == arm), key=lambda r: r["spec"]["seed"])
            if not mine:
                continue
            static = {r["spec"]["seed"]: r for r in mixing if r["spec"]["arm"] == "static_" + arm.split("_")[1]}
            # paired by seed (same initial weights, same first batches): the steps this run needs to reach the
            # final held-out loss of its static arm with the same seed, as a fraction of the run's length
            reach, saved = [], []
            for run in mine:
                if run["spec"]["seed"] in static:
                    steps = steps_to(run, final_loss(static[run["spec"]["seed"]]))
                    reach.append(steps)
                    saved.append(None if steps is None else 1 - steps / run["config"]["train"]["max_steps"])
            names = list(mine[0]["heldout"][-1]["losses"])
            arms[arm] = {
                "final_mean_heldout": _stats([final_loss(r) for r in mine]),
                "final_per_source": {n: _stats([r["heldout"][-1]["losses"][n] for r in mine]) for n in names},
                "steps_to_static_final": _stats(reach),
                "steps_to_static_final_per_seed": reach,
                "steps_saved": _stats(saved),
                "never_reached": sum(x is None for x in reach),
                "final_minus_static_paired": _stats(
                    [final_loss(r) - final_loss(static[r["spec"]["seed"]]) for r in mine if r["spec"]["seed"] in static]
                ),
            }
        out["mixing"] = arms
    cells = [r for r in runs if r["spec"]["experiment"] == "curriculum"]
    if cells:
        table = {}
        for order in ORDERS:
            for schedule in SCHEDULES:
                mine = [r for r in cells if r["spec"]["arm"] == f"{order}_{schedule}"]
                if mine:
                    table[f"{order}_{schedule}"] = {
                        "final_mean_heldout": _stats([final_loss(r) for r in mine]),
                        "unaveraged_final": _stats([mean_loss(r["heldout"][-1]["losses"]) for r in mine]),
                    }
        gains, paired = {}, {}
        by_cell = {(r["spec"]["arm"], r["spec"]["seed"]): final_loss(r) for r in cells}
        for schedule in SCHEDULES:
            a, b = table.get(f"shuffled_{schedule}"), table.get(f"curriculum_{schedule}")
            if a and b:
                gains[schedule] = a["final_mean_heldout"]["mean"] - b["final_mean_heldout"]["mean"]
                # paired by seed (same initial weights): removes most of the seed-to-seed spread
                paired[schedule] = _stats(
                    [
                        by_cell[(f"shuffled_{schedule}", s)] - by_cell[(f"curriculum_{schedule}", s)]
                        for (arm, s) in by_cell
                        if arm == f"shuffled_{schedule}" and (f"curriculum_{schedule}", s) in by_cell
                    ]
                )
        out["curriculum"] = {
            "table": table,
            "curriculum_gain": gains,
            "curriculum_gain_paired": paired,
            "difficulty": data.get("prepared", {}).get("difficulty"),
        }
    return out


def plot(data: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    runs = list(data["runs"].values())
    mixing = [r for r in runs if r["spec"]["experiment"] == "mixing"]
    if mixing:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for arm in MIXING_ARMS:
            mine = [r for r in mixing if r["spec"]["arm"] == arm]
            if mine:
                tokens = [p["tokens"] for p in mine[0]["heldout"]]
                curves = [[mean_loss(p["losses"]) for p in r["heldout"]] for r in mine]
                mean = [statistics.fmean(v) for v in zip(*curves, strict=False)]
                ax.plot(
                    tokens[: len(mean)],
                    mean,
                    label=f"{arm} ({len(mine)} seeds)",
                    linestyle="--" if arm.startswith("exp3") else "-",
                )
        ax.set(xlabel="tokens", ylabel="mean held-out loss (9 sources)", title="Loss-driven mixing")
        ax.set_ylim(top=min(ax.get_ylim()[1], 9))
        ax.legend()
        written.append(save_figure(110, fig, out / "mixing_heldout_vs_tokens.png"))
        exp3 = [r for r in mixing if r["spec"]["arm"].startswith("exp3") and r["spec"]["seed"] == 0]
        if exp3:
            fig, axes = plt.subplots(1, len(exp3), figsize=(6 * len(exp3), 4), squeeze=False)
            for ax, run in zip(axes[0], exp3, strict=False):
                for name, points in sorted(run["weights"].items()):
                    ax.plot([s for s, _ in points], [w for _, w in points], label=name)
                ax.set(xlabel="step", ylabel="weight", title=f"{run['spec']['arm']} (seed 0)")
            axes[0][-1].legend(fontsize=7, ncol=2)
            written.append(save_figure(110, fig, out / "mixing_weights.png"))
    table = data.get("analysis", {}).get("curriculum", {}).get("table", {})
    if table:
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.38
        for i, order in enumerate(ORDERS):
            cells = [table.get(f"{order}_{s}", {}).get("final_mean_heldout", {}) for s in SCHEDULES]
            xs = [j + (i - 0.5) * width for j in range(len(SCHEDULES))]
            ax.bar(
                xs,
                [c.get("mean") or 0 for c in cells],
                width,
                yerr=[c.get("std") or 0 for c in cells],
                label=order,
                capsize=3,
            )
        values = [c["final_mean_heldout"]["mean"] for c in table.values() if c["final_mean_heldout"]["mean"]]
        if values:
            ax.set_ylim(min(values) - 0.15, max(values) + 0.1)
        ax.set_xticks(range(len(SCHEDULES)), ["cosine", "WSD", "constant + averaging"])
        ax.set(ylabel="final mean held-out loss", title="Curriculum x LR schedule")
        ax.legend()
        written.append(save_figure(110, fig, out / "curriculum_schedule.png"))
    return written


def summary(data: dict[str, Any]) -> str:
    analysis, lines = data.get("analysis", {}), []
    for arm, row in analysis.get("mixing", {}).items():
        lines.append(
            f"{arm:15s} final {_pm(row['final_mean_heldout'])}  steps to the static final (same seed): "
            f"{_pm(row['steps_to_static_final'], 1)}, saved {_pm(row['steps_saved'], 3)} "
            f"(never: {row['never_reached']})"
        )
    for cell, row in analysis.get("curriculum", {}).get("table", {}).items():
        lines.append(
            f"{cell:25s} final {_pm(row['final_mean_heldout'])}  (last weights: {_pm(row['unaveraged_final'])})"
        )
    for schedule, gain in analysis.get("curriculum", {}).get("curriculum_gain_paired", {}).items():
        lines.append(f"curriculum gain under {schedule} (shuffled - curriculum, paired by seed): {_pm(gain)}")
    for arm, row in analysis.get("mixing", {}).items():
        if arm.startswith("exp3"):
            lines.append(f"{arm} - its static arm, paired by seed: {_pm(row['final_minus_static_paired'])}")
    return "\n".join(lines)


def _pm(stats: dict[str, Any], digits: int = 4) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.{digits}f} +/- {stats['std']:.{digits}f} (n={stats['n']})"


# -- the experiment ---------------------------------------------------------------------------------------------


def grid(settings: Settings) -> list[RunSpec]:
    """Seed by seed across both experiments, so a run stopped early still has every arm and cell at a few seeds."""
    specs = []
    for seed in range(max(settings.mixing_seeds, settings.curriculum_seeds)):
        if "mixing" in settings.experiments and seed < settings.mixing_seeds:
            specs += [RunSpec("mixing", arm, seed) for arm in MIXING_ARMS]
        if "curriculum" in settings.experiments and seed < settings.curriculum_seeds:
            specs += [RunSpec("curriculum", f"{o}_{sch}", seed) for sch in SCHEDULES for o in ORDERS]
    return specs


def _log(run: dict[str, Any]) -> None:
    logger.info("%-40s held-out %.4f  (%.0f s)", run["name"], final_loss(run), run["wall_s"])


def parse_args(argv: list[str] | None = None) -> tuple[Settings, bool]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--corpus", default=default_corpus(), help="folder of *_LANG.jsonl(.gz) files (default: %(default)s)"
    )
    parser.add_argument("--output", default=str(REPO / "outputs" / "mixing"))
    parser.add_argument(
        "--quick", action="store_true", help="6 steps per run, 1 seed: checks the script, measures nothing"
    )
    parser.add_argument("--analyse-only", action="store_true", help="redo the analysis and figures from results.json")
    parser.add_argument("--experiments", nargs="+", choices=["mixing", "curriculum"])
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--mixing-seeds", type=int)
    parser.add_argument("--curriculum-seeds", type=int)
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--heldout-windows", type=int, help="held-out windows per source")
    parser.add_argument("--exp3", type=json.loads, help="Exp3Feedback options as JSON, e.g. '{\"learning_rate\": 1.0}'")
    parser.add_argument("--jobs", type=int, help="runs in parallel (one thread each)")
    args = parser.parse_args(argv)
    values = dict(QUICK) if args.quick else {}
    for key in (
        "experiments",
        "steps",
        "seq_len",
        "batch_size",
        "learning_rate",
        "mixing_seeds",
        "curriculum_seeds",
        "eval_every",
        "heldout_windows",
        "exp3",
        "jobs",
    ):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    settings = Settings(corpus=args.corpus, output=args.output, **values)
    if not Path(settings.corpus).is_dir():
        raise SystemExit(f"--corpus {settings.corpus} is not a folder.")
    if settings.steps < 2 or settings.jobs < 1 or settings.eval_every < 1:
        raise SystemExit("--steps must be >= 2, --jobs and --eval-every >= 1.")
    if settings.steps // max(1, settings.steps // 10) < settings.average_last:
        raise SystemExit(f"--steps {settings.steps} leaves fewer than {settings.average_last} checkpoints to average.")
    return settings, args.analyse_only


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    settings, analyse_only = parse_args(argv)
    out = Path(settings.output)
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out / "results.json", settings)
    if not analyse_only:
        started = time.time()
        prepared = prepare(settings)
        results.data["prepared"] = {"difficulty": prepared["difficulty"], "names": prepared["names"]}
        execute(grid(settings), train_one, settings, prepared, results, _log)
        results.data["wall_s"] = results.data.get("wall_s", 0.0) + time.time() - started
    results.data["cpu_s"] = sum(r["cpu_s"] for r in results.data["runs"].values())
    results.data["analysis"] = analyse(results.data)
    results.save()
    plot(results.data, out)
    print(summary(results.data))
    return results.data


if __name__ == "__main__":
    main()
