"""Analysis and figures for `stability_lr_sweep.py`, from its `results.json` alone (the definitions: the analysis
plan in docs/experiments/stability.md). This first version holds what the sweep itself reads; the analysis follows
while the runs go."""

from __future__ import annotations

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


def final_bpb(run: dict[str, Any]) -> float | None:
    """The unweighted mean held-out bits per byte of the run's last evaluation (None: none, or not finite)."""
    points = run["series"].get("eval_bpb") or []
    return points[-1][1] if points else None


def plot(data: dict[str, Any], out: Any) -> list[Any]:
    return []


def summary(data: dict[str, Any]) -> str:
    return "analysis pending\n"
