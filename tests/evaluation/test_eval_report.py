"""The report: the paper's averaging, "—" for missing numbers, the paper's rows, Figure 4."""

from __future__ import annotations

import re

import pytest

from wonton_hf.evaluation.report import (
    PAPER_RESULTS,
    TABLE_2,
    TABLE_3,
    TABLE_4,
    paper_row,
    plot_belebele,
    render_report,
    write_report,
)

from ..paths import SHARED, needs_shared

PAPER_NOTES = SHARED / "reference" / "PAPER_NOTES.md"

BELEBELE = {
    "eng_Latn": 0.30,
    "deu_Latn": 0.40,
    "fra_Latn": 0.50,
    "ita_Latn": 0.20,
    "spa_Latn": 0.35,
    "zho_Hans": 0.45,
    "jpn_Jpan": 0.25,
    "kor_Hang": 0.55,
}
XTASKS = {
    "xnli_en": 0.51,
    "xnli_de": 0.42,
    "xnli_zh": 0.33,
    "xstorycloze_en": 0.70,
    "xstorycloze_es": 0.60,
    "xstorycloze_zh": 0.58,
    "xwinograd_en": 0.80,
    "xwinograd_fr": 0.61,
    "xwinograd_jp": 0.69,
}


def _results(drop: tuple[str, ...] = ()) -> dict:
    results = {f"belebele_{lang}": {"acc,none": value} for lang, value in BELEBELE.items()}
    results |= {task: {"acc,none": value} for task, value in XTASKS.items()}
    results |= {
        "lambada_openai": {"perplexity,none": 12.5, "acc,none": 0.41},
        "winogrande": {"acc,none": 0.55},
        "hellaswag": {"acc,none": 0.31, "acc_norm,none": 0.33},
        "piqa": {"acc,none": 0.66},
        "boolq": {"acc,none": 0.6},  # race not run
    }
    for task in drop:
        del results[task]
    n = {task: {"original": 100, "effective": 100} for task in results}
    return {"results": results, "n-samples": n, "versions": {task: 1.0 for task in results}}


def _our_cells(markdown: str, table_title: str) -> list[str]:
    section = markdown.split(f"## {table_title}", 1)[1].split("\n## ", 1)[0]
    (row,) = [line for line in section.splitlines() if line.startswith("| **tiny** (ours)")]
    return [cell.strip() for cell in row.strip("|").split("|")][1:]


def test_averages_match_a_hand_computation():
    markdown = render_report(_results(), "tiny")
    belebele = _our_cells(markdown, TABLE_3.title)
    # (0.30 + 0.40 + 0.50 + 0.20 + 0.35 + 0.45 + 0.25 + 0.55) / 8 = 3.00 / 8
    assert belebele == ["0.3750", "0.3000", "0.4000", "0.5000", "0.2000", "0.3500", "0.4500", "0.2500", "0.5500"]
    xtasks = _our_cells(markdown, TABLE_4.title)
    # (0.51 + 0.42 + 0.33 + 0.70 + 0.60 + 0.58 + 0.80 + 0.61 + 0.69) / 9 = 5.24 / 9 = 0.58222...
    assert xtasks[0] == "0.5822"
    assert xtasks[1:] == ["0.5100", "0.4200", "0.3300", "0.7000", "0.6000", "0.5800", "0.8000", "0.6100", "0.6900"]


def test_missing_tasks_show_as_dash_not_zero():
    markdown = render_report(_results(drop=("belebele_kor_Hang", "xnli_de")), "tiny")
    belebele = _our_cells(markdown, TABLE_3.title)
    assert belebele[0] == "—" and belebele[-1] == "—"  # no average over 7 of 8 languages
    assert belebele[1:-1] == ["0.3000", "0.4000", "0.5000", "0.2000", "0.3500", "0.4500", "0.2500"]
    xtasks = _our_cells(markdown, TABLE_4.title)
    assert xtasks[0] == "—" and xtasks[2] == "—"
    english = _our_cells(markdown, TABLE_2.title)
    assert english == ["12.5000", "0.4100", "0.5500", "0.3100", "0.6600", "—", "0.6000"]
    assert "Examples per task (ours): lambada_openai 100, winogrande 100, hellaswag 100, piqa 100, race —" in markdown
    assert "Subset only" not in markdown


def test_tables_without_results_are_left_out_and_subsets_flagged():
    results = {"results": {"piqa": {"acc,none": 0.5}}, "n-samples": {"piqa": {"original": 1838, "effective": 10}}}
    markdown = render_report(results, "tiny")
    assert TABLE_2.title in markdown and TABLE_3.title not in markdown and TABLE_4.title not in markdown
    assert "Subset only (`--limit`)" in markdown


def test_paper_rows_are_printed_beside_ours():
    markdown = render_report(_results(), "tiny")
    assert (
        "| Wonton 7B (paper) | 0.3517 | 0.3822 | 0.3500 | 0.3689 | 0.3367 | 0.3467 | 0.3567 | 0.3533 | 0.3189 |"
        in markdown
    )
    assert "| Mistral 7B (paper) | 3.7771 | — | 0.7364 | 0.6124 | 0.8074 | 0.4096 | 0.8376 |" in markdown
    # The paper's printed averages agree with the plain mean of its own columns (to its rounding).
    for model in PAPER_RESULTS:
        for table in (TABLE_3, TABLE_4):
            row = paper_row(table, model)
            values = [v for k, v in row.items() if k != "avg"]
            assert row["avg"] == pytest.approx(sum(values) / len(values), abs=2e-4), (model, table.key)


@needs_shared("reference", "PAPER_NOTES.md")
def test_paper_numbers_match_the_reference_notes():
    text = PAPER_NOTES.read_text(encoding="utf-8")
    for marker, table in (
        ("Table 2 (English)", TABLE_2),
        ("Table 3 (Belebele", TABLE_3),
        ("Table 4 (accuracy)", TABLE_4),
    ):
        section = text.split(marker, 1)[1]
        for model in PAPER_RESULTS:
            line = re.search(rf"^\| {re.escape(model)} \|(.*)\|$", section, re.MULTILINE).group(1)
            published = [float(cell) for cell in line.split("|")]
            row = paper_row(table, model)
            ours = [v for k, v in row.items() if v is not None]  # the paper has no Lambada accuracy
            assert ours == published, (model, table.key)


def test_report_files_and_figure(tmp_path):
    report, figure = write_report(_results(), tmp_path, "tiny")
    assert figure == tmp_path / "belebele.png" and figure.stat().st_size > 10_000
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![Belebele accuracy per language" in report.read_text(encoding="utf-8")
    assert plot_belebele({"results": {"piqa": {"acc,none": 0.5}}}, "tiny", tmp_path / "none.png") is None
