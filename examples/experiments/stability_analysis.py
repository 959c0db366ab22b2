"""Analysis and figures for `stability_lr_sweep.py`, from its `results.json` alone (`--analyse-only` reruns it).

The definitions are the analysis plan of docs/experiments/stability.md, fixed before the runs:

- **l0** / **final**: a run's unweighted mean held-out bits per byte before its first step / at its last step.
- **diverged**: a non-finite training loss or held-out value, a crash, or final >= l0.
- **event**: the first step whose training loss is non-finite or more than `SPIKE_MARGIN` nats above the step-1
  loss; runs with an event are the diverged runs and the loss spikes (runs that recovered).
- **LR sensitivity** (Wortsman et al. 2023, section 3.1) per width, arm and seed: mean over the LR grid of
  min(l(lr), l0) - min over the grid of l(lr), l = final (a diverged run counts as l0).
- **statistics**: mean +/- standard error over seeds; arms compared paired by seed (mean +/- SE, 95% t-interval, n).
- **early warning**: AUROC at step k of a monitor metric, positives = runs whose event comes after k, negatives =
  runs without event, over pairs of the same width and arm (or width, arm and LR); and alarm thresholds fitted
  leave-one-seed-out by Youden's J.

Every number in summary.md is computed here; `summary` depends on `results.json` only, so it is reproducible byte
for byte.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from statistics import mean, median, stdev
from typing import Any

METRICS = {
    "max_attn_logit": "stability/max_attn_logit/max",
    "query_norm": "stability/query_norm/max",
    "output_logit_mean": "stability/output_logit_mean",  # taken as |value|
    "mlp_in_grad_rms": "stability/mlp_in_grad_rms/max",
    "block_output_rms": "stability/block_output_rms/max",
    "output_norm_spectral": "stability/output_norm/spectral",
}
"""The report's monitored quantities (worst block), plus the output head's spectral norm."""

BASELINES = {"train_loss": "loss", "grad_norm": "grad_norm"}
"""What every run logs anyway: a monitor that warns no better than these adds nothing."""

SPIKE_MARGIN = 0.2
"""nats above the step-1 training loss that make a step an event"""

WINDOW = 30
"""the early-warning window: monitors are kept every step up to here"""

AUROC_STEPS = (1, 2, 3, 4, 5, 7, 10, 15, 20, 30)

ARM_LABELS = {
    "no_qkln": "no QK-LN",
    "qkln_maxz": "QK-LN + max-z (default)",
    "qkln_z": "QK-LN + z-loss",
}
COMPARISONS = (("no_qkln", "qkln_maxz"), ("qkln_z", "qkln_maxz"))
"""paired differences reported: arm a - arm b, same width, LR and seed"""

Run = dict[str, Any]


# -- one run -----------------------------------------------------------------------------------------------------


def values(run: Run, key: str) -> list[tuple[int, float | None]]:
    return [(int(s), v) for s, v in run["series"].get(key, [])]


def value_at(run: Run, key: str, step: int) -> float | None:
    return next((v for s, v in values(run, key) if s == step), None)


def mean_bpb(run: Run, step: int) -> float | None:
    """The unweighted mean over sources of the held-out bits per byte at `step` (None if a source is not finite).

    Not the package's `eval_bpb`: that one pools the bytes of all sources, so a source with more bytes counts more.
    """
    found = [value_at(run, f"eval_{name}_bpb", step) for name in source_names(run)]
    return None if not found or any(v is None for v in found) else mean(found)


def eval_steps(run: Run) -> list[int]:
    return [s for s, _ in values(run, "eval_bpb")]


def final_bpb(run: Run) -> float | None:
    """The unweighted mean held-out bpb of the run's last evaluation (None: none, or not finite)."""
    steps = eval_steps(run)
    return mean_bpb(run, steps[-1]) if steps else None


def initial_bpb(run: Run) -> float | None:
    """l0: the unweighted mean held-out bpb before the first step."""
    return mean_bpb(run, 0) if 0 in eval_steps(run) else None


def source_names(run: Run) -> list[str]:
    keys = [k for k in run["series"] if k.startswith("eval_") and k.endswith("_bpb") and k != "eval_bpb"]
    return sorted(k[len("eval_") : -len("_bpb")] for k in keys)


def per_source(run: Run, step: int | None = None) -> dict[str, dict[str, float | None]]:
    """source -> {"bpb", "loss"} of the last evaluation (or of `step`)."""
    out = {}
    for name in source_names(run):
        pick = (
            (lambda k: (values(run, k) or [(0, None)])[-1][1]) if step is None else (lambda k: value_at(run, k, step))
        )
        out[name] = {"bpb": pick(f"eval_{name}_bpb"), "loss": pick(f"eval_{name}_loss")}
    return out


def weighted_bpb(run: Run, weights: dict[str, float]) -> float | None:
    """The training-weighted mean of the per-source held-out bpb at the last evaluation."""
    found = per_source(run)
    parts = [(weights.get(name.removeprefix("heldout_"), 0.0), v["bpb"]) for name, v in found.items()]
    if not parts or any(b is None for _, b in parts) or not sum(w for w, _ in parts):
        return None
    return sum(w * b for w, b in parts) / sum(w for w, _ in parts)


def divergence(run: Run) -> dict[str, Any]:
    """{"diverged": bool, "event_step": first event step or None} (module docstring)."""
    losses = values(run, "loss")
    first = losses[0][1] if losses else None
    event = next((s for s, v in losses[1:] if v is None or first is None or v > first + SPIKE_MARGIN), None)
    final, initial = final_bpb(run), initial_bpb(run)
    heldout = [mean_bpb(run, step) for step in eval_steps(run)]
    diverged = (
        run.get("error") is not None
        or not losses
        or any(v is None for _, v in losses)
        or any(v is None for v in heldout)
        or final is None
        or initial is None
        or final >= initial
    )
    return {"diverged": bool(diverged), "event_step": event}


def has_event(run: Run) -> bool:
    d = divergence(run)
    return d["diverged"] or d["event_step"] is not None


def capped(run: Run) -> float:
    """The final bpb, a diverged run counting as its l0 (Wortsman et al.'s min(l, l0))."""
    final, initial = final_bpb(run), initial_bpb(run)
    if initial is None:
        raise ValueError(f"{run['name']}: no evaluation before the first step (eval_bpb at step 0)")
    return initial if final is None or divergence(run)["diverged"] else min(final, initial)


# -- statistics --------------------------------------------------------------------------------------------------


def t_quantile(df: int, level: float = 0.95) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df))


def describe(xs: Iterable[float]) -> dict[str, Any]:
    """n, mean, standard error and the 95% t-interval of the mean (SE and interval None for n = 1)."""
    xs = list(xs)
    n = len(xs)
    if not n:
        return {"n": 0, "mean": None, "se": None, "lo": None, "hi": None}
    m = mean(xs)
    se = stdev(xs) / math.sqrt(n) if n > 1 else None
    half = t_quantile(n - 1) * se if se is not None else None
    return {"n": n, "mean": m, "se": se, "lo": m - half if half is not None else None, "hi": m + half if half else None}


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """a - b over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    return {**describe(a[s] - b[s] for s in seeds), "per_seed": {s: a[s] - b[s] for s in seeds}}


def auroc(positives: list[float], negatives: list[float]) -> float | None:
    """P(positive > negative), ties one half (Mann-Whitney); None without pairs."""
    if not positives or not negatives:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in positives for q in negatives)
    return wins / (len(positives) * len(negatives))


# -- grouping ----------------------------------------------------------------------------------------------------


def base_runs(data: dict[str, Any]) -> list[Run]:
    return sorted(
        data["runs"].values(), key=lambda r: (r["spec"]["width"], r["spec"]["arm"], r["spec"]["lr"], r["spec"]["seed"])
    )


def ordered(items: Iterable[str], order: Iterable[str]) -> list[str]:
    order = list(order)
    return sorted(set(items), key=lambda x: (order.index(x) if x in order else len(order), x))


def widths_of(runs: list[Run]) -> list[str]:
    return sorted({r["spec"]["width"] for r in runs}, key=lambda w: (-int(w[1:]) if w[1:].isdigit() else 0, w))


def arms_of(runs: list[Run]) -> list[str]:
    return ordered((r["spec"]["arm"] for r in runs), ARM_LABELS)


def lrs_of(runs: list[Run]) -> list[float]:
    return sorted({r["spec"]["lr"] for r in runs})


def select(runs: list[Run], **spec: Any) -> list[Run]:
    return [r for r in runs if all(r["spec"][k] == v for k, v in spec.items())]


# -- the analyses ------------------------------------------------------------------------------------------------


def loss_vs_lr(runs: list[Run]) -> dict[str, Any]:
    """Per width, arm and LR: the capped final bpb over seeds, the diverged and event counts, the event steps."""
    out: dict[str, Any] = {}
    for width in widths_of(runs):
        for arm in arms_of(select(runs, width=width)):
            for lr in lrs_of(select(runs, width=width, arm=arm)):
                group = select(runs, width=width, arm=arm, lr=lr)
                status = [divergence(r) for r in group]
                out[f"{width}/{arm}/{lr:g}"] = {
                    **describe(capped(r) for r in group),
                    "diverged": sum(s["diverged"] for s in status),
                    "events": sum(s["diverged"] or s["event_step"] is not None for s in status),
                    "event_steps": sorted(s["event_step"] for s in status if s["event_step"] is not None),
                }
    return out


def by_seed(runs: list[Run], value: Callable[[Run], float]) -> dict[int, float]:
    return {r["spec"]["seed"]: value(r) for r in runs}


def paired_vs_lr(runs: list[Run]) -> dict[str, Any]:
    out = {}
    for width in widths_of(runs):
        for a, b in COMPARISONS:
            for lr in lrs_of(select(runs, width=width)):
                ra, rb = select(runs, width=width, arm=a, lr=lr), select(runs, width=width, arm=b, lr=lr)
                if ra and rb:
                    out[f"{width}/{a}-{b}/{lr:g}"] = paired(by_seed(ra, capped), by_seed(rb, capped))
    return out


def lr_sensitivity(runs: list[Run]) -> dict[str, Any]:
    """Per width and arm: per seed with the whole LR grid, mean over LRs of min(l, l0) - min over LRs of l; then
    across seeds."""
    per: dict[str, dict[int, float]] = defaultdict(dict)
    for width in widths_of(runs):
        grid = lrs_of(runs)  # the design's grid, the same for every width
        for arm in arms_of(select(runs, width=width)):
            mine = select(runs, width=width, arm=arm)
            for seed in sorted({r["spec"]["seed"] for r in mine}):
                losses = {r["spec"]["lr"]: capped(r) for r in select(mine, seed=seed)}
                if sorted(losses) == grid:  # a seed missing LRs (a stopped sweep) would bias the mean: left out
                    per[f"{width}/{arm}"][seed] = mean(losses.values()) - min(losses.values())
    out: dict[str, Any] = {k: {**describe(v.values()), "per_seed": v} for k, v in per.items()}
    for width in widths_of(runs):
        for a, b in COMPARISONS:
            if f"{width}/{a}" in per and f"{width}/{b}" in per:
                out[f"{width}/{a}-{b}"] = paired(per[f"{width}/{a}"], per[f"{width}/{b}"])
    return out


def largest_stable_lr(runs: list[Run]) -> dict[str, dict[int, float | None]]:
    out: dict[str, dict[int, float | None]] = defaultdict(dict)
    for r in runs:
        key = f"{r['spec']['width']}/{r['spec']['arm']}"
        ok = r["spec"]["lr"] if not divergence(r)["diverged"] else None
        seed = r["spec"]["seed"]
        current = out[key].get(seed)
        out[key][seed] = max(x for x in (current, ok) if x is not None) if (current or ok) else None
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def best_lr(runs: list[Run], weights: dict[str, float]) -> dict[str, Any]:
    """Per width and arm: the LR with the lowest mean capped final bpb; its means and per-source values."""
    out = {}
    for width in widths_of(runs):
        for arm in arms_of(select(runs, width=width)):
            mine = select(runs, width=width, arm=arm)
            lr = min(lrs_of(mine), key=lambda x: (mean(capped(r) for r in select(mine, lr=x)), x))
            group = select(mine, lr=lr)
            sources = source_names(group[0])
            out[f"{width}/{arm}"] = {
                "lr": lr,
                "bpb": describe(capped(r) for r in group),
                "weighted_bpb": describe(w for r in group if (w := weighted_bpb(r, weights)) is not None),
                "per_source": {
                    name: {
                        k: describe(v for r in group if (v := per_source(r)[name][k]) is not None)["mean"]
                        for k in ("bpb", "loss")
                    }
                    for name in sources
                },
            }
    return out


def signatures(runs: list[Run]) -> dict[str, Any]:
    """Attention-logit growth and the output-logit divergence test of the analysis plan."""
    peak_key, logit_key = METRICS["max_attn_logit"], METRICS["output_logit_mean"]
    steps = sorted({s for r in runs for s, _ in values(r, logit_key)})
    last, middle = (steps[-1], min(steps, key=lambda s: abs(s - steps[-1] / 2))) if steps else (None, None)
    table = {}
    for width in widths_of(runs):
        for arm in arms_of(select(runs, width=width)):
            for lr in lrs_of(select(runs, width=width, arm=arm)):
                group = select(runs, width=width, arm=arm, lr=lr)
                peaks = [p for r in group if (p := peak(r, peak_key)) is not None]
                ends = [v for r in group if (v := value_at(r, logit_key, last)) is not None]
                changes = [
                    e - m
                    for r in group
                    if (e := value_at(r, logit_key, last)) is not None
                    and (m := value_at(r, logit_key, middle)) is not None
                ]
                table[f"{width}/{arm}/{lr:g}"] = {
                    "peak_attn_logit": describe(peaks)["mean"],
                    "peak_attn_logit_range": [min(peaks), max(peaks)] if peaks else None,
                    "output_logit_end": describe(ends),
                    "output_logit_change": describe(changes),
                }
    matches = []
    for width in widths_of(runs):
        for arm in ("no_qkln", "qkln_maxz"):
            for lr in lrs_of(select(runs, width=width)):
                mine = {r["spec"]["seed"]: r for r in select(runs, width=width, arm=arm, lr=lr)}
                z = {r["spec"]["seed"]: r for r in select(runs, width=width, arm="qkln_z", lr=lr)}
                seeds = sorted(set(mine) & set(z))
                if not seeds:
                    continue

                if all(_falls_below(mine[s], z[s], logit_key, middle, last) for s in seeds):
                    matches.append(f"{width}/{arm}/{lr:g}")
    return {"middle_step": middle, "last_step": last, "table": table, "divergence_signature": matches}


def _falls_below(run: Run, z_run: Run, key: str, middle: int, last: int) -> bool:
    """The run's mean output logit falls from `middle` to `last` and ends below the z-loss run's."""
    end, mid, z_end = value_at(run, key, last), value_at(run, key, middle), value_at(z_run, key, last)
    return None not in (end, mid, z_end) and end < mid and end < z_end


def peak(run: Run, key: str, until: int | None = None) -> float | None:
    found = [abs(v) for s, v in values(run, key) if v is not None and (until is None or s <= until)]
    return max(found) if found else None


def metric_at(run: Run, key: str, step: int) -> float | None:
    value = value_at(run, key, step)
    return None if value is None else abs(value)


def _keys() -> dict[str, str]:
    return {**METRICS, **BASELINES}


def stratified_auroc(runs: list[Run], key: str | None, step: int, strata: Callable[[Run], Any]) -> dict[str, Any]:
    """AUROC at `step` over (positive, negative) pairs within the same stratum; `key` None: the peak LR."""
    groups: dict[Any, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for r in runs:
        d = divergence(r)
        event = d["event_step"] if d["event_step"] is not None else (math.inf if not d["diverged"] else None)
        if event is None:  # diverged without a loss event (e.g. never learned): neither warned about nor healthy
            continue
        if event <= step:
            continue
        value = r["spec"]["lr"] if key is None else metric_at(r, key, step)
        if value is None:
            continue
        groups[strata(r)][0 if math.isfinite(event) else 1].append(value)
    wins, pairs, pos, neg = 0.0, 0, 0, 0
    for positives, negatives in groups.values():
        if positives and negatives:
            wins += auroc(positives, negatives) * len(positives) * len(negatives)
            pairs += len(positives) * len(negatives)
            pos, neg = pos + len(positives), neg + len(negatives)
    return {"auroc": wins / pairs if pairs else None, "pairs": pairs, "positives": pos, "negatives": neg}


def auroc_table(runs: list[Run], by_lr: bool) -> dict[str, dict[int, dict[str, Any]]]:
    strata = (
        (lambda r: (r["spec"]["width"], r["spec"]["arm"], r["spec"]["lr"]))
        if by_lr
        else (lambda r: (r["spec"]["width"], r["spec"]["arm"]))
    )
    keys: dict[str, str | None] = dict(_keys())
    if not by_lr:
        keys["peak_lr"] = None
    return {name: {k: stratified_auroc(runs, key, k, strata) for k in AUROC_STEPS} for name, key in keys.items()}


def window_peak(run: Run, key: str) -> tuple[float | None, int]:
    """The metric's largest |value| over steps 1..min(WINDOW, event - 1), and that window's last step."""
    event = divergence(run)["event_step"]
    end = WINDOW if event is None else min(WINDOW, event - 1)
    return peak(run, key, until=end), end


def fit_threshold(runs: list[Run], key: str) -> float | None:
    """The threshold with the largest Youden's J on `runs` (ties: the highest); None if no event run or J <= 0."""
    event = [p for r in runs if has_event(r) and (p := window_peak(r, key)[0]) is not None]
    free = [p for r in runs if not has_event(r) and (p := window_peak(r, key)[0]) is not None]
    if not event or not free:
        return None
    best, best_j = None, 0.0
    for theta in sorted(set(event + free), reverse=True):
        j = sum(p > theta for p in event) / len(event) - sum(p > theta for p in free) / len(free)
        if j > best_j:
            best, best_j = theta, j
    return best


def first_above(run: Run, key: str, theta: float, end: int) -> int | None:
    return next((s for s, v in values(run, key) if v is not None and s <= end and abs(v) > theta), None)


def leave_one_seed_out(runs: list[Run]) -> dict[str, Any]:
    """Per metric: thresholds per width and arm fitted on the other seeds; counts on the left-out seed."""
    out = {}
    for name, key in _keys().items():
        warned, missed, false, free_n, leads, folds = 0, 0, 0, 0, [], []
        for width in widths_of(runs):
            for arm in arms_of(select(runs, width=width)):
                mine = select(runs, width=width, arm=arm)
                for seed in sorted({r["spec"]["seed"] for r in mine}):
                    theta = fit_threshold([r for r in mine if r["spec"]["seed"] != seed], key)
                    folds.append({"fold": f"{width}/{arm}/s{seed}", "threshold": theta})
                    for r in select(mine, seed=seed):
                        _, end = window_peak(r, key)
                        alarm = first_above(r, key, theta, end) if theta is not None else None
                        if not has_event(r):
                            free_n += 1
                            false += alarm is not None
                        elif alarm is not None and divergence(r)["event_step"] is not None:
                            warned += 1
                            leads.append(divergence(r)["event_step"] - alarm)
                        else:
                            missed += 1
        out[name] = {
            "warned": warned,
            "missed": missed,
            "event_runs": warned + missed,
            "false_alarms": false,
            "event_free_runs": free_n,
            "median_lead": median(leads) if leads else None,
            "folds_with_threshold": sum(f["threshold"] is not None for f in folds),
            "folds": len(folds),
        }
    return out


def provenance(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: inv.get(k) for k in ("commit", "dirty", "command", "started")} for inv in data.get("invocations", [])]


def missing_runs(data: dict[str, Any]) -> list[str]:
    """The runs of the last invocation's design that are not in the results (a sweep stopped at a deadline)."""
    settings = (data.get("invocations") or [{}])[-1].get("settings")
    if not settings:
        return []
    expected = [
        f"{width}_{arm}_lr{lr:g}_s{seed}"
        for width, seeds in settings["widths"].items()
        for seed in range(seeds)
        for lr in settings["lrs"]
        for arm in settings["arms"]
    ]
    return [name for name in expected if name not in data["runs"]]


def weights_of(data: dict[str, Any]) -> dict[str, float]:
    specs = (data.get("example_config") or {}).get("data", {}).get("sources", [])
    total = sum(s.get("weight", 1.0) for s in specs) or 1.0
    return {s["name"]: s.get("weight", 1.0) / total for s in specs}


def analyse(data: dict[str, Any]) -> dict[str, Any]:
    runs = base_runs(data)
    if not runs:
        return {}
    return {
        "runs": len(runs),
        "loss_vs_lr": loss_vs_lr(runs),
        "paired_vs_lr": paired_vs_lr(runs),
        "lr_sensitivity": lr_sensitivity(runs),
        "largest_stable_lr": largest_stable_lr(runs),
        "best": best_lr(runs, weights_of(data)),
        "signatures": signatures(runs),
        "auroc_by_arm": auroc_table(runs, by_lr=False),
        "auroc_by_arm_lr": auroc_table(runs, by_lr=True),
        "alarms": leave_one_seed_out(runs),
        "cpu_s_total": sum(r.get("cpu_s", 0.0) for r in runs),
        "wall_s": data.get("sweep_wall_s"),
        "provenance": provenance(data),
        "heldout": data.get("heldout"),
        "weights": weights_of(data),
        "missing": missing_runs(data),
    }


# -- summary.md --------------------------------------------------------------------------------------------------


def f3(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def g3(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def pm(d: dict[str, Any]) -> str:
    """mean ± SE (n)"""
    if d["mean"] is None:
        return "-"
    return f"{d['mean']:.3f}" + (f" ± {d['se']:.3f}" if d["se"] is not None else "") + f" (n={d['n']})"


def interval(d: dict[str, Any]) -> str:
    if d["mean"] is None:
        return "-"
    ci = f" [{d['lo']:+.3f}, {d['hi']:+.3f}]" if d["lo"] is not None else ""
    return f"{d['mean']:+.3f}" + (f" ± {d['se']:.3f}" if d["se"] is not None else "") + ci + f" (n={d['n']})"


def label(arm: str) -> str:
    return ARM_LABELS.get(arm, arm)


def summary(data: dict[str, Any]) -> str:
    a = analyse(data)
    if not a:
        return "no runs\n"
    runs = base_runs(data)
    lines = [
        "# Stability sweep: summary (computed by examples/experiments/stability_analysis.py from results.json)",
        "",
    ]
    for p in a["provenance"]:
        lines.append(
            f"- run from commit `{p['commit']}` (dirty tree: {p['dirty']}), started {p['started']}: `{p['command']}`"
        )
    h = a["heldout"] or {}
    lines += [
        f"- runs: {a['runs']}; training CPU time {a['cpu_s_total'] / 60:.1f} min (sum over runs, one thread each, "
        f"worker start-up excluded); sweep wall time {(a['wall_s'] or 0) / 60:.1f} min",
        f"- held out: share {h.get('held_out_share')}, {h.get('documents_per_source')} documents per source (available: "
        + ", ".join(f"{k} {v}" for k, v in (h.get("held_out_available") or {}).items())
        + f"), first {h.get('prefix_tokens')} tokens of each, {h.get('windows_per_source')} windows per source",
        "- training weights: " + ", ".join(f"{k} {v:.3f}" for k, v in a["weights"].items()),
        f"- runs of the design not finished: {len(a['missing'])}"
        + (": " + ", ".join(a["missing"]) if a["missing"] else ""),
        "",
        "All losses are held-out bits per byte (bpb), unweighted mean over sources, at the last step; a diverged run "
        "counts as its initial value (l0). mean ± SE (n = seeds); paired differences: mean ± SE [95% t-interval] (n).",
    ]
    l0 = [v for r in runs if (v := initial_bpb(r)) is not None]
    lines += ["", f"Initial held-out bpb l0: {min(l0):.3f} to {max(l0):.3f} over {len(l0)} runs.", ""]
    lrs = lrs_of(runs)
    header = "| width | arm | " + " | ".join(f"{lr:g}" for lr in lrs) + " |"
    rule = "|---|---|" + "---:|" * len(lrs)

    lines += ["## Final held-out bpb vs learning rate", "", header, rule]
    for key, row in _rows(a["loss_vs_lr"], runs):
        lines.append(f"| {key[0]} | {label(key[1])} | " + " | ".join(_cell(c) for c in row) + " |")
    lines += ["", "Cells: mean ± SE (n); `div k` = k seeds diverged; `ev k @s` = k runs with an event, at steps s.", ""]

    lines += ["## Paired differences by LR (same width, LR and seed)", "", header.replace("| arm |", "| a − b |"), rule]
    for width in widths_of(runs):
        for x, y in COMPARISONS:
            cells = [a["paired_vs_lr"].get(f"{width}/{x}-{y}/{lr:g}") for lr in lrs]
            if any(cells):
                lines.append(
                    f"| {width} | {label(x)} − {label(y)} | "
                    + " | ".join(interval(c) if c else "-" for c in cells)
                    + " |"
                )

    lines += [
        "",
        "## LR sensitivity (Wortsman et al. 2023)",
        "",
        "| width | arm | LR sensitivity | per seed |",
        "|---|---|---|---|",
    ]
    for width in widths_of(runs):
        for arm in arms_of(select(runs, width=width)):
            s = a["lr_sensitivity"][f"{width}/{arm}"]
            seeds = ", ".join(f"s{k}: {v:.3f}" for k, v in s["per_seed"].items())
            lines.append(f"| {width} | {label(arm)} | {pm(s)} | {seeds} |")
    lines += ["", "| width | a − b | paired difference | per seed |", "|---|---|---|---|"]
    for width in widths_of(runs):
        for x, y in COMPARISONS:
            s = a["lr_sensitivity"].get(f"{width}/{x}-{y}")
            if s:
                seeds = ", ".join(f"s{k}: {v:+.3f}" for k, v in s["per_seed"].items())
                lines.append(f"| {width} | {label(x)} − {label(y)} | {interval(s)} | {seeds} |")

    lines += ["", "Largest LR that did not diverge, per seed:", ""]
    for key, per in a["largest_stable_lr"].items():
        lines.append(f"- {key}: " + ", ".join(f"s{s}: {g3(v)}" for s, v in per.items()))

    lines += ["", "## Best LR per arm, per source", ""]
    sources = sorted({name for b in a["best"].values() for name in b["per_source"]})
    lines += [
        "| width | arm | best LR | bpb, unweighted mean | bpb, training-weighted | "
        + " | ".join(s.removeprefix("heldout_") for s in sources)
        + " |",
        "|---|---|---:|---|---|" + "---:|" * len(sources),
    ]
    for key, b in a["best"].items():
        width, arm = key.split("/")
        cells = [f"{f3(b['per_source'][s]['bpb'])} / {f3(b['per_source'][s]['loss'])}" for s in sources]
        lines.append(
            f"| {width} | {label(arm)} | {b['lr']:g} | {pm(b['bpb'])} | {pm(b['weighted_bpb'])} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "Per source: bpb / loss in nats per token (mean over seeds; nats are not comparable across languages).",
        "",
    ]

    sig = a["signatures"]
    lines += [
        "## Signatures",
        "",
        "Peak max attention logit (worst block, any step), mean over seeds [min, max]:",
        "",
        header,
        rule,
    ]
    for width in widths_of(runs):
        for arm in arms_of(select(runs, width=width)):
            cells = []
            for lr in lrs:
                t = sig["table"].get(f"{width}/{arm}/{lr:g}")
                r = t and t["peak_attn_logit_range"]
                cells.append(f"{g3(t['peak_attn_logit'])} [{g3(r[0])}, {g3(r[1])}]" if r else "-")
            lines.append(f"| {width} | {label(arm)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Mean output logit at step {sig['last_step']} (mean ± SE) and its change from step {sig['middle_step']}:",
        "",
        header,
        rule,
    ]
    for width in widths_of(runs):
        for arm in arms_of(select(runs, width=width)):
            cells = []
            for lr in lrs:
                t = sig["table"].get(f"{width}/{arm}/{lr:g}")
                cells.append(
                    f"{t['output_logit_end']['mean']:+.2f} ({t['output_logit_change']['mean']:+.2f})"
                    if t and t["output_logit_end"]["mean"] is not None and t["output_logit_change"]["mean"] is not None
                    else "-"
                )
            lines.append(f"| {width} | {label(arm)} | " + " | ".join(cells) + " |")
    matches = sig["divergence_signature"]
    lines += [
        "",
        "Output-logit divergence test (an arm without z-loss whose mean output logit falls over the second half and ends "
        "below the z-loss arm's, same width, LR and seed, in every seed): "
        + (", ".join(matches) if matches else "holds nowhere")
        + ".",
        "",
    ]

    for title, table in (
        ("pairs of the same width and arm", a["auroc_by_arm"]),
        ("pairs of the same width, arm and LR", a["auroc_by_arm_lr"]),
    ):
        lines += [
            f"## Early warning: AUROC at step k, {title}",
            "",
            "Positives: runs whose event comes after step k; negatives: runs without event. Cell: AUROC (pairs).",
            "",
            "| metric | " + " | ".join(f"k={k}" for k in AUROC_STEPS) + " |",
            "|---|" + "---:|" * len(AUROC_STEPS),
        ]
        for name, per_k in table.items():
            cells = [f"{f3(c['auroc'])} ({c['pairs']})" if c["pairs"] else "-" for c in per_k.values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        counts = [f"k={k}: {c['positives']}/{c['negatives']}" for k, c in next(iter(table.values())).items()]
        lines += ["", "Positive / negative runs in those pairs: " + ", ".join(counts) + ".", ""]

    lines += [
        "## Early warning: alarm thresholds fitted on the other seeds (leave-one-seed-out, per width and arm)",
        "",
        f"An alarm: |metric| above the threshold at a step ≤ {WINDOW} before the run's event (Youden's J on the other seeds).",
        "",
        "| metric | event runs warned | missed | median lead (steps) | false alarms / event-free runs | folds with a threshold |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, w in a["alarms"].items():
        lines.append(
            f"| {name} | {w['warned']} / {w['event_runs']} | {w['missed']} | {g3(w['median_lead'])} | "
            f"{w['false_alarms']} / {w['event_free_runs']} | {w['folds_with_threshold']} / {w['folds']} |"
        )
    return "\n".join(lines) + "\n"


def _rows(table: dict[str, Any], runs: list[Run]) -> list[tuple[tuple[str, str], list[dict[str, Any] | None]]]:
    out = []
    for width in widths_of(runs):
        for arm in arms_of(select(runs, width=width)):
            out.append(((width, arm), [table.get(f"{width}/{arm}/{lr:g}") for lr in lrs_of(runs)]))
    return out


def _cell(c: dict[str, Any] | None) -> str:
    if c is None:
        return "-"
    text = pm(c)
    if c["diverged"]:
        text += f", div {c['diverged']}"
    if c["events"]:
        text += f", ev {c['events']} @" + ",".join(str(s) for s in c["event_steps"])
    return text


# -- figures -----------------------------------------------------------------------------------------------------


def plot(data: dict[str, Any], out: Path) -> list[Path]:
    """final_bpb_vs_lr.png, lr_sensitivity.png, attention_logits.png, output_logits.png, early_warning_auroc.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from harness import save_figure

    runs = base_runs(data)
    if not runs:
        return []
    a = analyse(data)
    widths, arms = widths_of(runs), arms_of(runs)
    colors = dict(zip(arms, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    written = []

    fig, axes = plt.subplots(1, len(widths), figsize=(5 * len(widths), 4), squeeze=False)
    for ax, width in zip(axes[0], widths, strict=True):
        for arm in arms_of(select(runs, width=width)):
            lrs = lrs_of(select(runs, width=width, arm=arm))
            cells = [a["loss_vs_lr"][f"{width}/{arm}/{lr:g}"] for lr in lrs]
            ax.errorbar(
                lrs,
                [c["mean"] for c in cells],
                yerr=[c["se"] or 0 for c in cells],
                color=colors[arm],
                label=label(arm),
                capsize=2,
            )
            for r in select(runs, width=width, arm=arm):
                ax.plot(r["spec"]["lr"], capped(r), "x" if divergence(r)["diverged"] else ".", color=colors[arm], ms=4)
        ax.set(xscale="log", xlabel="peak learning rate", ylabel="final held-out bpb (diverged = l0)", title=width)
        ax.legend(fontsize=7)
    written.append(save_figure(80, fig, out / "final_bpb_vs_lr.png"))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ticks = []
    for i, (width, arm) in enumerate((w, x) for w in widths for x in arms_of(select(runs, width=w))):
        s = a["lr_sensitivity"][f"{width}/{arm}"]
        ax.bar(i, s["mean"], yerr=s["se"] or 0, color=colors[arm], capsize=3)
        ax.plot([i] * len(s["per_seed"]), list(s["per_seed"].values()), "k.", ms=5)
        ticks.append(f"{width}\n{label(arm)}")
    ax.set_xticks(range(len(ticks)), ticks, fontsize=6)
    ax.set(ylabel="LR sensitivity (bpb)", title="LR sensitivity (bars: mean ± SE; dots: seeds)")
    written.append(save_figure(80, fig, out / "lr_sensitivity.png"))

    fig, axes = plt.subplots(1, len(widths), figsize=(5 * len(widths), 4), squeeze=False)
    for ax, width in zip(axes[0], widths, strict=True):
        for r in select(runs, width=width):
            p = peak(r, METRICS["max_attn_logit"])
            if p is not None:
                ax.plot(r["spec"]["lr"], p, "x" if has_event(r) else "o", color=colors[r["spec"]["arm"]], ms=4)
        for arm in arms_of(select(runs, width=width)):
            ax.plot([], [], "o", color=colors[arm], label=label(arm))
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="peak learning rate",
            ylabel="peak max attention logit",
            title=f"{width} (x: event)",
        )
        ax.legend(fontsize=7)
    written.append(save_figure(80, fig, out / "attention_logits.png"))

    top = lrs_of(runs)[-2:]
    fig, axes = plt.subplots(1, len(widths), figsize=(5 * len(widths), 4), squeeze=False)
    for ax, width in zip(axes[0], widths, strict=True):
        for r in select(runs, width=width, seed=0):
            if r["spec"]["lr"] not in top:
                continue
            points = [(s, v) for s, v in values(r, METRICS["output_logit_mean"]) if v is not None]
            if points:
                style = "-" if r["spec"]["lr"] == top[-1] else "--"
                ax.plot(
                    *zip(*points, strict=True),
                    style,
                    color=colors[r["spec"]["arm"]],
                    label=f"{label(r['spec']['arm'])}, lr {r['spec']['lr']:g}",
                )
        ax.set(xlabel="step", ylabel="mean output logit", title=f"{width}, seed 0")
        ax.legend(fontsize=6)
    written.append(save_figure(80, fig, out / "output_logits.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, per_k in a["auroc_by_arm"].items():
        points = [(k, c["auroc"]) for k, c in per_k.items() if c["auroc"] is not None]
        if points:
            ax.plot(*zip(*points, strict=True), "o-" if name in METRICS else "s--", ms=3, label=name)
    ax.axhline(0.5, color="grey", lw=0.5)
    ax.set(
        xlabel="step k",
        ylabel="AUROC (same width and arm)",
        title="Early warning: later-event runs vs healthy runs",
        ylim=(0, 1),
    )
    ax.legend(fontsize=6)
    written.append(save_figure(80, fig, out / "early_warning_auroc.png"))
    return written
