"""docs/experiments.md, mixing and schedules half: every number its results quote is in a committed summary.md
(computed by the scripts' analysis from the committed results.json, which the scripts' tests regenerate)."""

from __future__ import annotations

import re

from ..paths import CHECKOUT

DOC = CHECKOUT / "docs" / "experiments.md"
SUMMARIES = [CHECKOUT / "docs" / "experiments" / name / "summary.md" for name in ("mixing", "schedules")]
HEADING = "## Mixing and LR schedules"


def quoted_numbers(text: str) -> list[str]:
    """Decimal numbers (0.123, -0.05, 1.58) in the results part of the mixing and schedules half."""
    part = text[text.index(HEADING) :]
    results = part[part.index("### Results") :]
    return [n.lstrip("+-−") for n in re.findall(r"(?<![\w.])[-−+]?\d+\.\d+", results)]


def test_the_finder_sees_numbers_and_ignores_words():
    text = f"{HEADING}\n### Plan\n0.07\n### Results\nx2.5 gave −0.123 ± 0.04 (n=5), 1.58x, v1.2.3"
    assert quoted_numbers(text) == ["0.123", "0.04", "1.58"]


def test_every_number_the_results_quote_is_in_a_summary():
    assert all(path.is_file() for path in SUMMARIES), "a committed summary.md is missing"
    summaries = "".join(path.read_text() for path in SUMMARIES)
    numbers = quoted_numbers(DOC.read_text())
    assert numbers, "the results section quotes no number"
    missing = sorted({n for n in numbers if not re.search(rf"(?<![\d.]){re.escape(n)}(?!\d)", summaries)})
    assert not missing, f"quoted in docs/experiments.md but in no summary.md: {missing}"
