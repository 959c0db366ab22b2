"""`wonton-hf plot-run`: the loss and the monitors' metrics of a run as PNGs, from the Trainer's own logs.

Source, in order: `RUN_DIR/trainer_state.json` (written by `trainer.save_state()`), else that of the
newest `checkpoint-N/` under RUN_DIR, else TensorBoard event files under RUN_DIR (the `train/` prefix the
TensorBoard callback adds is dropped). Every metric is plotted against the step it was logged at, in log
order; SpikeGuard events are drawn as vertical lines on the loss plot. A run with in-loop evaluation also gets
`held_out.png`: the held-out loss next to the training loss, then the held-out loss and the bits per byte per
source (`eval_<source>_loss`, `eval_<source>_bpb`).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from ..checkpointing.protocol import checkpoint_step

Series = dict[str, list[tuple[int, float]]]

FIGURES: dict[str, tuple[str, list[str]]] = {
    # file stem: (title, metric families: a key, or a prefix ending in "/" for all its sub-keys)
    "loss": ("Training loss", ["loss", "grad_norm", "learning_rate"]),
    "max_attn_logit": ("Max attention logit", ["stability/max_attn_logit/"]),
    "query_norm": ("Mean query norm", ["stability/query_norm/"]),
    "output_logit": ("Output logits", ["stability/output_logit_mean", "stability/z_loss", "stability/max_z_loss"]),
    "mlp_in_grad_rms": ("RMS of the first MLP layer's gradient", ["stability/mlp_in_grad_rms/"]),
    "block_output_rms": ("Block output RMS", ["stability/block_output_rms/"]),
    "throughput": ("Throughput", ["throughput/device/tokens_per_s", "throughput/step_time_s", "throughput/device/mfu"]),
}


def find_log_history(run_dir: Path) -> list[dict]:
    """The run's log history (see the module docstring for where it is looked for)."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Run directory {run_dir} does not exist; pass the Trainer's output_dir.")
    state = run_dir / "trainer_state.json"
    if not state.exists():
        checkpoints = sorted(
            run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: checkpoint_step(p.parent) or -1
        )
        state = checkpoints[-1] if checkpoints else None
    if state is not None:
        return json.loads(state.read_text(encoding="utf-8")).get("log_history", [])
    events = sorted(run_dir.rglob("events.out.tfevents.*"))
    if events:
        return _tensorboard_history(events)
    raise FileNotFoundError(
        f"No trainer_state.json, checkpoint-*/trainer_state.json or TensorBoard events under {run_dir}; "
        "save a checkpoint (save_steps) or train with report_to=['tensorboard']."
    )


def _tensorboard_history(event_files: list[Path]) -> list[dict]:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as error:
        raise FileNotFoundError("Only TensorBoard events found; install `tensorboard` to read them.") from error
    rows: dict[int, dict] = defaultdict(dict)
    for directory in sorted({p.parent for p in event_files}):
        accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0}).Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                name = tag.removeprefix("train/")
                name = f"eval_{name[5:]}" if name.startswith("eval/") else name  # the Trainer's `eval_` keys
                rows[event.step][name] = event.value
    return [{**values, "step": step} for step, values in sorted(rows.items())]


def collect(history: list[dict]) -> Series:
    series: Series = defaultdict(list)
    for entry in history:
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                series[key].append((int(step), float(value)))
    return series


def _keys(series: Series, families: list[str]) -> list[str]:
    keys = []
    for family in families:
        if family.endswith("/"):
            found = [k for k in series if k.startswith(family)]
            keys += sorted(found, key=lambda k: (not k.rsplit("/", 1)[-1].startswith("layer_"), _layer(k), k))
        elif family in series:
            keys.append(family)
    return keys


def _layer(key: str) -> int:
    match = re.search(r"layer_(\d+)$", key)
    return int(match.group(1)) if match else -1


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write one PNG per figure with data into `out_dir` (default `RUN_DIR/plots`); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    series = collect(find_log_history(run_dir))
    out = Path(out_dir) if out_dir else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    spike_steps = [
        step
        for key in series
        if key in ("spike/skip", "spike/rollback", "spike/bad_step_not_skipped")
        for step, _ in series[key]
    ]
    written = []
    for stem, (title, families) in FIGURES.items():
        keys = _keys(series, families)
        if not keys:
            continue
        written.append(_figure(plt, title, series, keys, spike_steps if stem == "loss" else [], out / f"{stem}.png"))
    held_out = _held_out_figure(plt, series, out / "held_out.png")
    if held_out is not None:
        written.append(held_out)
    if not written:
        raise ValueError(
            f"The logs under {run_dir} hold none of the plotted metrics (loss, stability/*, throughput/*)."
        )
    return written


def _figure(plt, title: str, series: Series, keys: list[str], spikes: list[int], path: Path) -> Path:
    per_layer = [k for k in keys if _layer(k) >= 0]
    panels = [k for k in keys if _layer(k) < 0]
    # Per-layer curves share the first panel; summaries (max/mean) and single metrics get their own.
    groups = ([per_layer] if per_layer else []) + [[k] for k in panels]
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.6 * len(groups)), sharex=True, squeeze=False)
    for axis, group in zip(axes[:, 0], groups, strict=True):
        for key in group:
            steps, values = zip(*series[key], strict=True)
            axis.plot(steps, values, marker="." if len(steps) < 50 else None, linewidth=1, label=key.rsplit("/", 1)[-1])
        axis.set_ylabel(group[0].rsplit("/", 1)[-1] if len(group) == 1 else "per layer")
        for step in spikes:
            axis.axvline(step, color="red", alpha=0.3, linewidth=1)
        if len(group) > 1:
            axis.legend(fontsize=7, ncol=4)
        axis.grid(alpha=0.3)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _held_out_figure(plt, series: Series, path: Path) -> Path | None:
    """Training loss and held-out loss on one panel; per-source held-out loss; per-source bits per byte."""
    if "eval_loss" not in series:
        return None
    per_source = {
        kind: sorted(k for k in series if k.startswith("eval_") and k.endswith(f"_{kind}") and k != f"eval_{kind}")
        for kind in ("loss", "bpb")
    }
    panels = [(["loss", "eval_loss"], "loss"), (per_source["loss"], "held-out loss"), (per_source["bpb"], "bits/byte")]
    panels = [(keys, label) for keys, label in panels if any(k in series for k in keys)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.8 * len(panels)), sharex=True, squeeze=False)
    for axis, (keys, label) in zip(axes[:, 0], panels, strict=True):
        for key in keys:
            if key not in series:
                continue
            steps, values = zip(*series[key], strict=True)
            name = {"loss": "training", "eval_loss": "held-out"}.get(key, key[5:].rsplit("_", 1)[0])
            axis.plot(steps, values, marker="." if len(steps) < 50 else None, linewidth=1, label=name)
        axis.set_ylabel(label)
        axis.legend(fontsize=7, ncol=5)
        axis.grid(alpha=0.3)
    axes[0, 0].set_title("Held-out evaluation")
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
