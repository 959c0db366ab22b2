"""lm-eval results laid out like the paper's Tables 2, 3 and 4, beside its published rows, plus Figure 4.

Our averages are the paper's: a plain mean over the table's columns (Table 3: the eight Belebele languages;
Table 4: the nine XNLI / XStoryCloze / XWinograd columns), computed from lm-eval's per-task numbers. A
column lm-eval did not produce is shown as "—", and an average over an incomplete row is "—" too: a mean
over fewer languages would not be comparable with the paper's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .suites import BELEBELE, XNLI, XSTORYCLOZE, XWINOGRAD

MISSING = "—"


@dataclass(frozen=True)
class Column:
    label: str
    task: str
    """lm-eval task name"""
    metric: str = "acc"
    """lm-eval metric name (results key `<metric>,none`)"""


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    columns: tuple[Column, ...]
    average: bool
    """whether the row starts with the plain average of its columns, as in the paper"""

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(column.task for column in self.columns))


TABLE_2 = Table(
    key="table2",
    title="Table 2 — English benchmarks",
    columns=(
        Column("Lambada ppl ↓", "lambada_openai", "perplexity"),
        Column("Lambada acc", "lambada_openai", "acc"),
        Column("WinoGrande", "winogrande"),
        Column("HellaSwag", "hellaswag"),
        Column("PIQA", "piqa"),
        Column("RACE", "race"),
        Column("BoolQ", "boolq"),
    ),
    average=False,
)
TABLE_3 = Table(
    key="table3",
    title="Table 3 — Belebele accuracy",
    columns=tuple(Column(label, task) for label, task in BELEBELE.columns),
    average=True,
)
TABLE_4 = Table(
    key="table4",
    title="Table 4 — XNLI, XStoryCloze and XWinograd accuracy",
    columns=tuple(
        Column(f"{prefix} {label}", task)
        for family, prefix in ((XNLI, "XNLI"), (XSTORYCLOZE, "XSC"), (XWINOGRAD, "XWG"))
        for label, task in family.columns
    ),
    average=True,
)
TABLES = (TABLE_2, TABLE_3, TABLE_4)


def _paper_row(table: Table, values: Sequence[float | None], average: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {(c.task, c.metric): v for c, v in zip(table.columns, values, strict=True) if v is not None}
    if average is not None:
        row[(table.key, "avg")] = average
    return row


def _merge(*rows: dict[str, Any]) -> dict[tuple[str, str], float]:
    merged: dict[tuple[str, str], float] = {}
    for row in rows:
        merged.update(row)
    return merged


# The paper's published numbers (arXiv 2404.15702, Tables 2-4), keyed by (lm-eval task, metric); the
# printed averages under (table key, "avg"). The paper gives no Lambada accuracy: None, shown as "—".
PAPER_RESULTS: dict[str, dict[tuple[str, str], float]] = {
    "Mistral 7B": _merge(
        _paper_row(TABLE_2, [3.7771, None, 0.7364, 0.6124, 0.8074, 0.4096, 0.8376]),
        _paper_row(TABLE_3, [0.4544, 0.4278, 0.4222, 0.3900, 0.4033, 0.4067, 0.3656, 0.3889], 0.4073),
        _paper_row(TABLE_4, [0.5731, 0.5026, 0.3737, 0.7882, 0.6903, 0.6334, 0.8865, 0.7470, 0.7278], 0.6581),
    ),
    "Pythia 7B": _merge(
        _paper_row(TABLE_2, [6.9210, None, 0.6109, 0.4811, 0.7514, 0.3684, 0.6358]),
        _paper_row(TABLE_3, [0.3656, 0.3267, 0.3644, 0.3278, 0.3300, 0.3578, 0.3156, 0.3189], 0.3384),
        _paper_row(TABLE_4, [0.5411, 0.4605, 0.3387, 0.7055, 0.5989, 0.5381, 0.8245, 0.6627, 0.5871], 0.5841),
    ),
    "Wonton 7B": _merge(
        _paper_row(TABLE_2, [6.2973, None, 0.6456, 0.4777, 0.7503, 0.3684, 0.6685]),
        _paper_row(TABLE_3, [0.3822, 0.3500, 0.3689, 0.3367, 0.3467, 0.3567, 0.3533, 0.3189], 0.3517),
        _paper_row(TABLE_4, [0.5427, 0.4884, 0.3417, 0.7075, 0.6453, 0.6056, 0.8417, 0.6627, 0.7018], 0.6153),
    ),
}


# ---------------------------------------------------------------- numbers


def metric_value(results: Mapping[str, Any], task: str, metric: str) -> float | None:
    """One number from lm-eval's results dict, or None when the task or metric is absent (or not finite)."""
    value = results.get("results", {}).get(task, {}).get(f"{metric},none")
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def table_average(values: Sequence[float | None]) -> float | None:
    """The paper's average: a plain mean over the columns, defined only when every column is present."""
    if not values or any(value is None for value in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def our_row(table: Table, results: Mapping[str, Any]) -> dict[str, float | None]:
    """Column label (and "avg") -> our value, from lm-eval's results."""
    values = {column.label: metric_value(results, column.task, column.metric) for column in table.columns}
    row: dict[str, float | None] = {}
    if table.average:
        row["avg"] = table_average(list(values.values()))
    row.update(values)
    return row


def paper_row(table: Table, model: str) -> dict[str, float | None]:
    published = PAPER_RESULTS[model]
    row: dict[str, float | None] = {}
    if table.average:
        row["avg"] = published.get((table.key, "avg"))
    row.update({column.label: published.get((column.task, column.metric)) for column in table.columns})
    return row


def table_rows(table: Table, results: Mapping[str, Any], model_name: str) -> list[tuple[str, dict[str, float | None]]]:
    """(row label, values) for the paper's three models, then ours."""
    rows = [(f"{model} (paper)", paper_row(table, model)) for model in PAPER_RESULTS]
    rows.append((f"**{model_name}** (ours)", our_row(table, results)))
    return rows


# ---------------------------------------------------------------- Markdown


def _format(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4f}"


def render_table(table: Table, results: Mapping[str, Any], model_name: str) -> str:
    rows = table_rows(table, results, model_name)
    headers = ["model", *rows[0][1].keys()]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join([label, *map(_format, values.values())]) + " |" for label, values in rows]
    return "\n".join(lines)


def _sample_counts(table: Table, results: Mapping[str, Any]) -> tuple[str, bool]:
    """ "task n, ..." for our row, and whether any task ran on a subset of its examples (--limit)."""
    counts, subset = [], False
    for task in table.tasks:
        n = results.get("n-samples", {}).get(task)
        counts.append(f"{task} {n['effective'] if n else MISSING}")
        subset |= bool(n) and n["effective"] < n["original"]
    return ", ".join(counts), subset


def render_report(results: Mapping[str, Any], model_name: str, figure: str | None = None) -> str:
    """The whole Markdown report; tables with none of their tasks in `results` are left out."""
    versions = results.get("versions", {})
    lm_eval_version = results.get("lm_eval_version") or results.get("config", {}).get("lm_eval_version", "")
    parts = [
        f"# Evaluation of {model_name}",
        "",
        f"Zero-shot lm-eval{' ' + lm_eval_version if lm_eval_version else ''} tasks (`eval_tasks/`); paper rows "
        "from Tables 2-4 of the Wonton technical report (arXiv 2404.15702). Averages are plain means over "
        f"the columns, as in the paper; {MISSING} marks a number that was not produced.",
    ]
    for table in TABLES:
        present = [task for task in table.tasks if task in results.get("results", {})]
        if not present:
            continue
        counts, subset = _sample_counts(table, results)
        parts += [
            "",
            f"## {table.title}",
            "",
            render_table(table, results, model_name),
            "",
            f"Examples per task (ours): {counts}.",
        ]
        if subset:
            parts.append("**Subset only (`--limit`): these numbers are not comparable with the paper's.**")
        task_versions = sorted({f"{task} v{versions[task]}" for task in present if task in versions})
        if task_versions:
            parts.append(f"lm-eval task versions: {', '.join(task_versions)}.")
        if table is TABLE_4:
            parts.append(
                "The paper counts 5010 XNLI examples per language (XNLI's test split); lm-eval's `xnli_*` tasks, "
                "used here unchanged, score the 2490-example validation split."
            )
        if table is TABLE_3 and figure:
            parts += ["", f"![Belebele accuracy per language, as in the paper's Figure 4]({figure})"]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- Figure 4


def plot_belebele(results: Mapping[str, Any], model_name: str, path: str | Path) -> Path | None:
    """A radar chart of Belebele accuracy per language, ours beside the paper's models (its Figure 4).

    Returns None when the results hold no Belebele task. Uses the object-oriented Matplotlib API (no pyplot
    state), so it is safe in any process and needs no display.
    """
    from matplotlib.figure import Figure

    ours = [metric_value(results, column.task, column.metric) for column in TABLE_3.columns]
    if all(value is None for value in ours):
        return None
    labels = [column.label for column in TABLE_3.columns]
    angles = [2 * math.pi * i / len(labels) for i in range(len(labels))]
    figure = Figure(figsize=(6, 6), dpi=120)
    axes = figure.add_subplot(projection="polar")
    series = {f"{model} (paper)": list(paper_row(TABLE_3, model).values())[1:] for model in PAPER_RESULTS}
    series[f"{model_name} (ours)"] = ours
    for name, values in series.items():
        points = [math.nan if value is None else value for value in values]
        axes.plot(angles + angles[:1], points + points[:1], marker="o", linewidth=1.5, label=name)
    # Belebele has four choices: 0.25 is chance, the floor every model in the paper's Figure 4 sits above.
    circle = [2 * math.pi * i / 96 for i in range(97)]
    axes.plot(circle, [0.25] * len(circle), color="grey", linestyle="--", linewidth=1, label="chance (0.25)")
    axes.set_xticks(angles, labels)
    axes.set_ylim(0, max([0.5] + [v for v in ours if v is not None]))
    axes.set_title("Belebele accuracy per language")
    axes.legend(loc="upper right", bbox_to_anchor=(1.35, 1.1), fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    return path


def write_report(results: Mapping[str, Any], output_dir: str | Path, model_name: str) -> tuple[Path, Path | None]:
    """Write `report.md` and `belebele.png` (when Belebele ran) into `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    figure = plot_belebele(results, model_name, output_dir / "belebele.png")
    report = output_dir / "report.md"
    report.write_text(render_report(results, model_name, figure.name if figure else None), encoding="utf-8")
    return report, figure
