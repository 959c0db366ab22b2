"""The end-of-run data report: per source, the tokens and documents trained on and the records skipped, by reason.

The counts live in the scheduler of each rank (`scheduler.stats()`, over the windows the model consumed);
the report sums them over ranks. Printed at the end of a run and written to `<run>/data_report.json`, so
nobody has to open `checkpoint-N/data_scheduler/rank*.json` to learn that a source lost records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...distributed import gather_object


def data_report(scheduler: Any) -> dict[str, Any]:
    """`{"sources": {name: {language, weight, tokens, documents, skipped: {reason: n}, skipped_total}}, totals}`.

    A collective: every rank must call it.
    """
    per_rank = gather_object(scheduler.stats())
    sources: dict[str, dict[str, Any]] = {}
    for name in scheduler.names:
        skipped: dict[str, int] = {}
        for stats in per_rank:
            for reason, count in stats[name]["skipped"].items():
                skipped[reason] = skipped.get(reason, 0) + int(count)
        sources[name] = {
            "language": per_rank[0][name].get("language"),
            "weight": round(float(scheduler.weights[name]), 6),
            "tokens": sum(int(stats[name]["tokens"]) for stats in per_rank),
            "documents": sum(int(stats[name]["documents"]) for stats in per_rank),
            "skipped": dict(sorted(skipped.items())),
            "skipped_total": sum(skipped.values()),
        }
    totals = {key: sum(s[key] for s in sources.values()) for key in ("tokens", "documents", "skipped_total")}
    return {"ranks": len(per_rank), "sources": sources, "totals": totals}


def format_data_report(report: dict[str, Any]) -> str:
    """A small table for the console: one line per source."""
    rows = [("source", "tokens", "documents", "skipped", "by reason")]
    for name, s in report["sources"].items():
        reasons = ", ".join(f"{reason} {count}" for reason, count in s["skipped"].items()) or "-"
        rows.append((name, f"{s['tokens']:,}", f"{s['documents']:,}", f"{s['skipped_total']:,}", reasons))
    t = report["totals"]
    rows.append(("all", f"{t['tokens']:,}", f"{t['documents']:,}", f"{t['skipped_total']:,}", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}  {r[4]}".rstrip()
        for r in rows
    ]
    return f"Data report ({report['ranks']} rank(s)):\n" + "\n".join(lines)


def write_data_report(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
