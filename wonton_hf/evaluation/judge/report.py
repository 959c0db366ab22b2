"""Means with confidence intervals, the chat-minus-base difference, a Markdown table and a figure.

Statistics. A question's turns are not independent (turn 2 builds on turn 1), so intervals come from a
bootstrap over *questions*: each resample draws question ids with replacement and takes every rated turn of
each. 95% percentile intervals, 2,000 resamples, a fixed seed (the report is repeatable). The difference chat -
base is paired: only (question, turn) pairs rated for both models enter it, and the bootstrap resamples
questions for both together — the paper's "+2.6 over the base model" is this number.

Unparsed ratings and judge errors are not in the means (there is no rating to average) but every table shows how
many there were, next to the number of rated answers, so a judge that fails on one model or one language is seen.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PAPER_CHAT_MINUS_BASE = 2.6
"""Wonton report, section 4: the chat model's judge score over the base model's (1-10 scale)"""
MISSING = "—"
RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    mean: float | None
    low: float | None
    high: float | None
    n: int
    """rated answers (or pairs) in the estimate"""
    unparsed: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "ci95": [self.low, self.high],
            "n": self.n,
            "unparsed": self.unparsed,
            "errors": self.errors,
        }


def _bootstrap(groups: list[list[float]], seed: int = 0) -> tuple[float | None, float | None, float | None]:
    """Mean of all values, and a percentile interval resampling whole groups (questions)."""
    values = [v for g in groups for v in g]
    if not values:
        return None, None, None
    mean = float(np.mean(values))
    if len(groups) < 2:
        return mean, None, None
    rng = np.random.default_rng(seed)
    sums = np.array([sum(g) for g in groups], dtype=float)
    counts = np.array([len(g) for g in groups], dtype=float)
    picks = rng.integers(0, len(groups), size=(RESAMPLES, len(groups)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return mean, float(low), float(high)


def estimate(records: Iterable[dict[str, Any]]) -> Estimate:
    """Mean rating of `records` (one model's judgments, any subset) with its bootstrap interval."""
    groups: dict[str, list[float]] = defaultdict(list)
    unparsed = errors = 0
    for r in records:
        if r["status"] == "ok":
            groups[r["question_id"]].append(float(r["rating"]))
        elif r["status"] == "unparsed":
            unparsed += 1
        else:
            errors += 1
    mean, low, high = _bootstrap(list(groups.values()))
    return Estimate(mean, low, high, sum(len(g) for g in groups.values()), unparsed, errors)


def difference(records: Sequence[dict[str, Any]], model: str, base: str) -> Estimate:
    """Paired mean of model - base over the (question, turn) pairs both have a rating for."""
    ratings: dict[str, dict[tuple[str, int], float]] = {model: {}, base: {}}
    for r in records:
        if r["model"] in ratings and r["status"] == "ok":
            ratings[r["model"]][(r["question_id"], r["turn"])] = float(r["rating"])
    groups: dict[str, list[float]] = defaultdict(list)
    for key, value in ratings[model].items():
        if key in ratings[base]:
            groups[key[0]].append(value - ratings[base][key])
    mean, low, high = _bootstrap(list(groups.values()))
    return Estimate(mean, low, high, sum(len(g) for g in groups.values()))


def summarise(records: Sequence[dict[str, Any]], models: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Everything the report shows, as plain data (written to summary.json).

    `models`: [{"label", "mode", "path"}] in the order given; each chat model is compared with the first base model.
    """
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_model[r["model"]].append(r)
    labels = [m["label"] for m in models]

    def split(key: str) -> dict[str, dict[str, Any]]:
        values = sorted({str(r[key]) for r in records}, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else v))
        return {v: {m: estimate(r for r in by_model[m] if str(r[key]) == v).as_dict() for m in labels} for v in values}

    summary: dict[str, Any] = {
        "models": list(models),
        "overall": {m: estimate(by_model[m]).as_dict() for m in labels},
        "per_category": split("category"),
        "per_language": split("language"),
        "per_turn": split("turn_label"),
        "differences": [],
        "paper_chat_minus_base": PAPER_CHAT_MINUS_BASE,
    }
    bases = [m["label"] for m in models if m["mode"] == "base"]
    if bases:
        base = bases[0]
        for m in models:
            if m["mode"] != "chat":
                continue
            per_category = {}
            for category in summary["per_category"]:
                subset = [r for r in records if r["category"] == category]
                per_category[category] = difference(subset, m["label"], base).as_dict()
            per_language = {}
            for language in summary["per_language"]:
                subset = [r for r in records if r["language"] == language]
                per_language[language] = difference(subset, m["label"], base).as_dict()
            summary["differences"].append(
                {
                    "model": m["label"],
                    "base": base,
                    "overall": difference(records, m["label"], base).as_dict(),
                    "per_category": per_category,
                    "per_language": per_language,
                }
            )
    return summary


# ---------------------------------------------------------------- Markdown


def _num(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _ci(e: dict[str, Any], signed: bool = False) -> str:
    low, high = e["ci95"]
    return MISSING if low is None else f"[{_num(low, signed)}, {_num(high, signed)}]"


def _cell(e: dict[str, Any]) -> str:
    text = f"{_num(e['mean'])} {_ci(e)}" if e["mean"] is not None else MISSING
    lost = e["unparsed"] + e["errors"]
    return f"{text} (n={e['n']}" + (f", {lost} unrated" if lost else "") + ")"


def _split_table(
    title: str, split: dict[str, dict[str, dict[str, Any]]], labels: list[str], diffs: list[dict], key: str
) -> list[str]:
    head = [
        "",
        f"## {title}",
        "",
        "| " + " | ".join([title.split()[-1], *labels, *[f"{d['model']} − {d['base']}" for d in diffs]]) + " |",
    ]
    head.append("|" + "---|" * (1 + len(labels) + len(diffs)))
    for value, per_model in split.items():
        cells = [_cell(per_model[m]) for m in labels]
        cells += [f"{_num(d[key][value]['mean'], True)} (pairs={d[key][value]['n']})" for d in diffs if key]
        head.append("| " + " | ".join([value, *cells]) + " |")
    return head


def render_report(summary: dict[str, Any], meta: dict[str, Any], figure: str | None = None) -> str:
    labels = [m["label"] for m in summary["models"]]
    modes = {m["label"]: m["mode"] for m in summary["models"]}
    lines = [
        "# Chat evaluation: LLM judge, 1-10",
        "",
        f"Questions: {meta['questions']} ({meta['n_questions']} questions, {meta['n_turns']} turns). "
        f"Judge: `{meta['judge']}` ({meta['judge_backend']}), MT-Bench single-answer grading prompts "
        "(`single-v1`, `single-math-v1` with a reference answer, and their multi-turn forms). "
        "Chat models answer through their chat template, base models through a plain `Question:`/`Answer:` "
        "transcript. Means over rated answers with 95% bootstrap intervals over questions; unrated = the judge's "
        "reply had no readable `[[rating]]` (unparsed) or the judge failed after retries (error).",
        "",
        "## Overall",
        "",
        "| model | mode | mean | 95% CI | rated | unparsed | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in labels:
        e = summary["overall"][m]
        lines.append(
            f"| {m} | {modes[m]} | {_num(e['mean'])} | {_ci(e)} | {e['n']} | {e['unparsed']} | {e['errors']} |"
        )
    diffs = summary["differences"]
    if diffs:
        lines += [
            "",
            f"## Chat minus base (the paper reports +{summary['paper_chat_minus_base']})",
            "",
            "| comparison | difference | 95% CI | paired answers |",
            "|---|---|---|---|",
        ]
        for d in diffs:
            e = d["overall"]
            lines.append(f"| {d['model']} − {d['base']} | {_num(e['mean'], True)} | {_ci(e, True)} | {e['n']} |")
    lines += _split_table("Per category", summary["per_category"], labels, diffs, "per_category")
    lines += _split_table("Per language", summary["per_language"], labels, diffs, "per_language")
    lines += _split_table("Per turn", summary["per_turn"], labels, [], "")
    if figure:
        lines += ["", f"![Judge score per category and language]({figure})"]
    return "\n".join(lines) + "\n"


def render_benchmarks(results: dict[str, dict[str, Any]], modes: dict[str, str]) -> str:
    """The lm-eval suites with one row per model (base plain, chat with its chat template), the paper's columns."""
    from ..report import TABLES, our_row

    lines = [
        "",
        "## Benchmarks (lm-eval), base and chat side by side",
        "",
        "Zero-shot lm-eval tasks of `wonton-hf eval`; chat models with `--apply-chat-template` (their prompts "
        "wrapped in the chat template), base models without, as in the paper's tables.",
    ]
    for table in TABLES:
        if not any(task in r.get("results", {}) for r in results.values() for task in table.tasks):
            continue
        rows = {label: our_row(table, r) for label, r in results.items()}
        headers = list(next(iter(rows.values())))
        lines += ["", f"### {table.title}", "", "| model | mode | " + " | ".join(headers) + " |"]
        lines.append("|" + "---|" * (len(headers) + 2))
        for label, row in rows.items():
            values = [MISSING if v is None else f"{v:.4f}" for v in row.values()]
            lines.append(f"| {label} | {modes[label]} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- figure


def plot_scores(summary: dict[str, Any], path: str | Path) -> Path | None:
    """Grouped bars with 95% intervals: overall and per category (left), per language (right). Object-oriented
    Matplotlib (no pyplot state): safe in any thread, no display needed."""
    from matplotlib.figure import Figure

    labels = [m["label"] for m in summary["models"]]
    panels = [
        ("per category", {"overall": summary["overall"], **summary["per_category"]}),
        ("per language", summary["per_language"]),
    ]
    figure = Figure(figsize=(12, 4.5), dpi=110)
    axes_list = figure.subplots(1, 2, gridspec_kw={"width_ratios": [max(len(p[1]), 1) for p in panels]})
    width = 0.8 / max(len(labels), 1)
    for axes, (title, split) in zip(axes_list, panels, strict=True):
        groups = list(split)
        for i, m in enumerate(labels):
            means, err_low, err_high = [], [], []
            for g in groups:
                e = split[g][m]
                mean = e["mean"] if e["mean"] is not None else math.nan
                low, high = e["ci95"]
                means.append(mean)
                err_low.append(0.0 if low is None else mean - low)
                err_high.append(0.0 if high is None else high - mean)
            xs = [k + (i - (len(labels) - 1) / 2) * width for k in range(len(groups))]
            axes.bar(xs, means, width, yerr=[err_low, err_high], capsize=3, label=m)
        axes.set_xticks(
            range(len(groups)),
            groups,
            rotation=30 if title == "per category" else 0,
            ha="right" if title == "per category" else "center",
        )
        axes.set_ylim(0, 10.5)
        axes.set_ylabel("judge score (1-10)")
        axes.set_title(f"Judge score {title}")
        axes.grid(axis="y", alpha=0.3)
    axes_list[0].legend(fontsize="small")
    diffs = summary["differences"]
    if diffs:
        d = diffs[0]
        figure.suptitle(
            f"{d['model']} − {d['base']}: {_num(d['overall']['mean'], True)} (paper: +{summary['paper_chat_minus_base']})"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    return path


__all__ = [
    "PAPER_CHAT_MINUS_BASE",
    "Estimate",
    "difference",
    "estimate",
    "plot_scores",
    "render_benchmarks",
    "render_report",
    "summarise",
]
