"""Analysis and figures for `stability_lr_sweep.py`, from its `results.json` alone (rerun with `--analyse-only`).

Definitions (stated again in docs/experiments.md):

- **initial loss** l0: the held-out loss of the run's model before its first step.
- **diverged**: a non-finite training loss or held-out loss, a crash, or a final training loss (mean of the last
  10% of steps) at or above the training loss of step 1. The **event step** is the first step whose training
  loss is non-finite or more than `SPIKE_MARGIN` nats above the step-1 loss (per-batch losses at initialisation
  spread by ~0.05 nats, and the first steps of warm-up barely move the weights, so a bare `>=` fires on noise).
- **loss spike**: a run that is not diverged but has an event step (it went back above its starting loss, then
  recovered). Diverged runs and loss spikes are the *events* the early-warning analysis looks for.
- **LR sensitivity** (Wortsman et al. 2023, section 3.1): `mean over the LR grid of min(l(lr), l0) - min over the
  grid of l(lr)`, with l the final held-out loss (a diverged run counts as l0), per arm and seed.
- **early warning**: for each metric, the threshold for a run is the largest value any *other* run without an
  event reached (leave-one-out, all arms together, as a user would set one alarm level). A run with an event is
  warned if the metric crosses its threshold at or before the event step (lead = event step - crossing step);
  a run without an event whose metric crosses its threshold is a false alarm. The same is also computed with
  thresholds from the runs of the same arm only (`early_warning_by_arm`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from harness import save_figure  # next to this script (the sweep and the tests put this folder on sys.path)

METRICS = {
    "max_attn_logit": "stability/max_attn_logit/max",
    "query_norm": "stability/query_norm/max",
    "output_logit_mean": "stability/output_logit_mean",  # taken as |value|: it diverges towards large negative
    "mlp_in_grad_rms": "stability/mlp_in_grad_rms/max",
    "block_output_rms": "stability/block_output_rms/max",
    "output_norm_spectral": "stability/output_norm/spectral",
}
"""The paper's five monitored quantities (worst block), plus the output head's operator norm."""

SPIKE_MARGIN = 0.1
"""nats above the step-1 training loss that make a step an event (see the module docstring)"""

ARM_LABELS = {
    "no_qkln": "no QK-LN, no z",
    "qkln": "QK-LN",
    "qkln_maxz": "QK-LN + max-z (default)",
    "qkln_z": "QK-LN + z-loss",
}


def _values(run: dict[str, Any], key: str) -> list[tuple[int, float | None]]:
    return [(int(s), v) for s, v in run["series"].get(key, [])]


def divergence(run: dict[str, Any]) -> dict[str, Any]:
    losses = _values(run, "loss")
    if not losses:
        return {"diverged": run.get("error") is not None, "step": None, "event_step": None}
    first = losses[0][1]
    step = next((s for s, v in losses[1:] if v is None or first is None or v > first + SPIKE_MARGIN), None)
    tail = [v for _, v in losses[-max(1, len(losses) // 10) :]]
    nonfinite = any(v is None for _, v in losses) or run.get("final_heldout_loss") is None
    diverged = nonfinite or run.get("error") is not None or (first is not None and mean(tail) >= first)
    return {"diverged": bool(diverged), "step": step if diverged else None, "event_step": step}


def capped_loss(run: dict[str, Any]) -> float:
    final, initial = run.get("final_heldout_loss"), run["initial_heldout_loss"]
    if final is None or divergence(run)["diverged"]:
        return initial
    return min(final, initial)


def base_runs(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in data["runs"].values() if r["spec"]["guard"] is None]


def lr_sensitivity(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_arm_seed: dict[str, dict[int, dict[float, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in runs:
        by_arm_seed[r["spec"]["arm"]][r["spec"]["seed"]][r["spec"]["lr"]] = capped_loss(r)
    out = {}
    for arm, seeds in by_arm_seed.items():
        per_seed = {seed: mean(losses.values()) - min(losses.values()) for seed, losses in seeds.items()}
        values = list(per_seed.values())
        out[arm] = {
            "per_seed": per_seed,
            "mean": mean(values),
            "std": stdev(values) if len(values) > 1 else None,
            "lrs": sorted({lr for losses in seeds.values() for lr in losses}),
        }
    return out


def _peak(run: dict[str, Any], key: str, until: int | None = None) -> float | None:
    values = [
        abs(v) for s, v in _values(run, key) if v is not None and math.isfinite(v) and (until is None or s <= until)
    ]
    return max(values) if values else None


def _first_cross(run: dict[str, Any], key: str, threshold: float) -> int | None:
    return next((s for s, v in _values(run, key) if v is not None and abs(v) > threshold), None)


def early_warning(runs: list[dict[str, Any]], by_arm: bool = False) -> dict[str, Any]:
    """See the module docstring; `by_arm`: thresholds only from runs of the same arm (one alarm level per model
    configuration instead of one for all)."""
    status = {r["name"]: divergence(r) for r in runs}
    event = {name: s["diverged"] or s["event_step"] is not None for name, s in status.items()}
    stable = [r for r in runs if not event[r["name"]]]
    table: dict[str, Any] = {}
    for metric, key in METRICS.items():
        rows, false_alarms, warned, late, missed = [], [], 0, 0, 0
        for run in runs:
            peers = [o for o in stable if o is not run and (not by_arm or o["spec"]["arm"] == run["spec"]["arm"])]
            others = [p for p in (_peak(o, key) for o in peers) if p is not None]
            if not others:
                continue
            threshold = max(others)
            cross = _first_cross(run, key, threshold)
            div = status[run["name"]]
            if not event[run["name"]]:
                if cross is not None:
                    false_alarms.append({"run": run["name"], "step": cross, "threshold": threshold})
                continue
            lead = div["event_step"] - cross if cross is not None and div["event_step"] is not None else None
            if cross is None:
                missed += 1
            elif lead is not None and lead >= 0:
                warned += 1
            else:
                late += 1
            rows.append(
                {
                    "run": run["name"],
                    "diverged": div["diverged"],
                    "event_step": div["event_step"],
                    "cross_step": cross,
                    "lead_steps": lead,
                    "threshold": threshold,
                }
            )
        leads = [r["lead_steps"] for r in rows if r["lead_steps"] is not None and r["lead_steps"] >= 0]
        table[metric] = {
            "key": key,
            "event_runs": rows,
            "warned": warned,
            "late": late,
            "missed": missed,
            "median_lead": sorted(leads)[len(leads) // 2] if leads else None,
            "false_alarms": false_alarms,
            "stable_runs": len(stable),
        }
    return table


def best_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm, the LR with the lowest mean capped held-out loss, and its runs' output-head norms at the end."""
    by_arm: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        by_arm[r["spec"]["arm"]][r["spec"]["lr"]].append(r)
    out = {}
    for arm, lrs in by_arm.items():
        lr, group = min(lrs.items(), key=lambda item: mean(capped_loss(r) for r in item[1]))
        last = lambda r, k: (_values(r, k) or [(0, None)])[-1][1]  # noqa: E731
        out[arm] = {
            "lr": lr,
            "heldout_loss": [capped_loss(r) for r in group],
            "spectral_norm": [last(r, METRICS["output_norm_spectral"]) for r in group],
            "rms_inf_norm": [last(r, "stability/output_norm/rms_inf") for r in group],
        }
    return out


def guard_report(data: dict[str, Any]) -> list[dict[str, Any]]:
    runs = data["runs"]
    rows = []
    for r in runs.values():
        if r["spec"]["guard"] is None:
            continue
        spec = r["spec"]
        base = runs.get(f"{spec['arm']}_lr{spec['lr']:g}_s{spec['seed']}")
        state = r.get("guard_state") or {}
        rows.append(
            {
                "run": r["name"],
                "guard": spec["guard"],
                "diverged": divergence(r)["diverged"],
                "heldout_loss": r.get("final_heldout_loss"),
                "base_heldout_loss": base and base.get("final_heldout_loss"),
                "base_diverged": base and divergence(base)["diverged"],
                "skipped": state.get("skipped"),
                "rollbacks": state.get("rollbacks"),
                "events": len(state.get("events", [])),
                "gave_up": any(e.get("event") == "gave_up" for e in state.get("events", [])),
                "error": r.get("error"),
            }
        )
    return rows


def analyse(data: dict[str, Any]) -> dict[str, Any]:
    runs = base_runs(data)
    if not runs:
        return {}
    stable_by_arm: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        if not divergence(r)["diverged"]:
            stable_by_arm[r["spec"]["arm"]].append(r["spec"]["lr"])
    return {
        "runs": {
            r["name"]: {
                **divergence(r),
                "capped_heldout_loss": capped_loss(r),
                "peaks": {m: _peak(r, k) for m, k in METRICS.items()},
            }
            for r in runs
        },
        "lr_sensitivity": lr_sensitivity(runs),
        "early_warning": early_warning(runs),
        "early_warning_by_arm": early_warning(runs, by_arm=True),
        "best": best_runs(runs),
        "largest_stable_lr": {arm: max(lrs) for arm, lrs in stable_by_arm.items()},
        "spike_guard": guard_report(data),
        "cpu_s_total": sum(r.get("cpu_s", 0.0) for r in data["runs"].values()),
    }


def loss_table(runs: list[dict[str, Any]]) -> list[str]:
    """Final held-out loss per arm and LR (seeds separated by `/`; `div` marks a diverged run)."""
    lrs = sorted({r["spec"]["lr"] for r in runs})
    arms = list(dict.fromkeys(r["spec"]["arm"] for r in runs))
    lines = ["| arm | " + " | ".join(f"{lr:g}" for lr in lrs) + " |", "|---|" + "---:|" * len(lrs)]
    for arm in arms:
        cells = []
        for lr in lrs:
            mine = sorted(
                (r for r in runs if r["spec"]["arm"] == arm and r["spec"]["lr"] == lr), key=lambda r: r["spec"]["seed"]
            )
            cells.append(
                " / ".join(
                    ("div " if divergence(r)["diverged"] else "") + f"{r['final_heldout_loss'] or float('nan'):.2f}"
                    for r in mine
                )
            )
        lines.append(f"| {ARM_LABELS.get(arm, arm)} | " + " | ".join(cells) + " |")
    return lines


def summary(data: dict[str, Any]) -> str:
    a = data.get("analysis") or {}
    if not a:
        return "no runs"
    lines = [f"Final held-out loss (initial: {base_runs(data)[0]['initial_heldout_loss']:.2f}):", ""]
    lines += loss_table(base_runs(data)) + [""]
    lines += [
        "| arm | LR sensitivity (mean over seeds) | per seed | best LR | held-out loss at best | output-head spectral / RMS->inf norm at best |",
        "|---|---:|---|---:|---:|---|",
    ]
    for arm, s in a["lr_sensitivity"].items():
        best = a["best"][arm]
        norms = ", ".join(
            f"{x:.1f} / {y:.1f}"
            for x, y in zip(best["spectral_norm"], best["rms_inf_norm"], strict=True)
            if x is not None and y is not None
        )
        lines.append(
            f"| {ARM_LABELS.get(arm, arm)} | {s['mean']:.3f}"
            + (f" ± {s['std']:.3f}" if s["std"] else "")
            + f" | {', '.join(f'{v:.3f}' for v in s['per_seed'].values())} | {best['lr']:g} | "
            + f"{', '.join(f'{x:.3f}' for x in best['heldout_loss'])} | {norms} |"
        )
    for title, table in (
        ("one threshold for all arms", a["early_warning"]),
        ("thresholds per arm", a.get("early_warning_by_arm", {})),
    ):
        lines += [
            "",
            f"Early warning, {title}:",
            "",
            "| metric | event runs warned (lead >= 0) | late | missed | median lead (steps) | false alarms / runs without event |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for metric, w in table.items():
            lines.append(
                f"| {metric} | {w['warned']} | {w['late']} | {w['missed']} | {w['median_lead']} | "
                f"{len(w['false_alarms'])} / {w['stable_runs']} |"
            )
    if a["spike_guard"]:
        lines += [
            "",
            "| SpikeGuard run | diverged | held-out | without guard | skipped | rollbacks | gave up |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for g in a["spike_guard"]:
            fmt = lambda v: "nan" if v is None else f"{v:.3f}"  # noqa: E731
            lines.append(
                f"| {g['run']} | {g['diverged']} | {fmt(g['heldout_loss'])} | {fmt(g['base_heldout_loss'])} | "
                f"{g['skipped']} | {g['rollbacks']} | {g['gave_up']} |"
            )
    lines.append(
        f"\nruns: {len(data['runs'])}, CPU time {a['cpu_s_total'] / 60:.1f} min, "
        f"sweep wall time {data.get('sweep_wall_s', 0) / 60:.1f} min"
    )
    return "\n".join(lines)


# -- figures -----------------------------------------------------------------------------------------------------


def plot(data: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = base_runs(data)
    if not runs:
        return []
    arms = list(dict.fromkeys(r["spec"]["arm"] for r in runs))
    colors = dict(zip(arms, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in arms:
        mine = [r for r in runs if r["spec"]["arm"] == arm]
        lrs = sorted({r["spec"]["lr"] for r in mine})
        ax.plot(
            lrs,
            [mean(capped_loss(r) for r in mine if r["spec"]["lr"] == lr) for lr in lrs],
            "-",
            color=colors[arm],
            label=ARM_LABELS.get(arm, arm),
        )
        for r in mine:
            ax.plot(r["spec"]["lr"], capped_loss(r), "x" if divergence(r)["diverged"] else "o", color=colors[arm], ms=4)
    ax.set(
        xscale="log",
        xlabel="peak learning rate",
        ylabel="final held-out loss (diverged = initial)",
        title="Final loss vs learning rate (x: diverged)",
    )
    ax.legend(fontsize=8)
    written.append(save_figure(80, fig, out / "final_loss_vs_lr.png"))

    top = sorted({r["spec"]["lr"] for r in runs})[-2:]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in runs:
        if r["spec"]["lr"] not in top or r["spec"]["seed"] != 0:
            continue
        style = "-" if r["spec"]["lr"] == top[-1] else "--"
        label = f"{ARM_LABELS.get(r['spec']['arm'], r['spec']['arm'])}, lr {r['spec']['lr']:g}"
        for ax, key in zip(axes, (METRICS["max_attn_logit"], METRICS["output_logit_mean"]), strict=True):
            points = [(s, v) for s, v in _values(r, key) if v is not None]
            if points:
                ax.plot(*zip(*points, strict=True), style, color=colors[r["spec"]["arm"]], label=label)
    axes[0].set(yscale="log", xlabel="step", ylabel="max attention logit (worst block)", title="Attention logits")
    axes[1].set(xlabel="step", ylabel="mean output logit", title="Output logits")
    axes[0].legend(fontsize=7)
    written.append(save_figure(80, fig, out / "monitors_high_lr.png"))

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    last = lambda r, k: next((v for _, v in reversed(_values(r, k)) if v is not None), None)  # noqa: E731
    for arm in arms:
        mine = sorted((r for r in runs if r["spec"]["arm"] == arm), key=lambda r: r["spec"]["lr"])
        for ax, value in zip(
            axes,
            (lambda r: _peak(r, METRICS["max_attn_logit"]), lambda r: last(r, METRICS["output_norm_spectral"])),
            strict=True,
        ):
            points = [(r["spec"]["lr"], value(r)) for r in mine if value(r) is not None]
            ax.plot(*zip(*points, strict=True), "o", color=colors[arm], ms=4, label=ARM_LABELS.get(arm, arm))
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="peak learning rate",
        ylabel="peak max attention logit",
        title="Attention-logit growth (all seeds)",
    )
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="peak learning rate",
        ylabel="output-head spectral norm, last step",
        title="Output-layer operator norm",
    )
    axes[0].legend(fontsize=8)
    written.append(save_figure(80, fig, out / "monitors_vs_lr.png"))

    sens = lr_sensitivity(runs)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, arm in enumerate(arms):
        ax.bar(i, sens[arm]["mean"], color=colors[arm])
        ax.plot([i] * len(sens[arm]["per_seed"]), list(sens[arm]["per_seed"].values()), "k.", ms=6)
    ax.set_xticks(range(len(arms)), [ARM_LABELS.get(a, a) for a in arms], fontsize=8)
    ax.set(ylabel="LR sensitivity (nats)", title="LR sensitivity per arm (dots: seeds)")
    written.append(save_figure(80, fig, out / "lr_sensitivity.png"))

    guards = [r for r in data["runs"].values() if r["spec"]["guard"] is not None]
    if guards:
        fig, ax = plt.subplots(figsize=(6, 4))
        spec = guards[0]["spec"]
        base = data["runs"].get(f"{spec['arm']}_lr{spec['lr']:g}_s{spec['seed']}")
        for r, label in [(base, "no guard")] + [(g, f"SpikeGuard {g['spec']['guard']}") for g in guards]:
            if r is None:
                continue
            points = [(s, v) for s, v in _values(r, "loss") if v is not None]
            ax.plot(*zip(*points, strict=True), lw=0.8, label=label)
        ax.set(
            xlabel="step",
            ylabel="training loss",
            title=f"{ARM_LABELS.get(spec['arm'], spec['arm'])}, lr {spec['lr']:g}",
        )
        ax.legend(fontsize=8)
        written.append(save_figure(80, fig, out / "spike_guard.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
