"""The scheduler's resume state: its documented format, its version, and how a state carries over to a new layout.

A state is a JSON-able dict per rank (`STATE_SCHEMA`; a test checks the two agree): positions are computed from
it, never replayed. With the same world size and worker count the stream continues window for window. With the
same number of *shards* (world size x DataLoader workers: 2 ranks x 1 worker -> 1 rank x 2 workers), the same
windows per device batch and the same windows per shard and step, each old shard's snapshot becomes the role of
the new rank that owns that shard number (`regrouped_state`), and the stream is the uninterrupted run's, step for
step, as MosaicML streaming's "canonical nodes" make it. Otherwise the old frontiers become history
(`layout.History`) and no record is lost or repeated, but which windows form a step differs. A state of another
version is refused, not converted: the package was never released with another, and positions written under
other shard layout rules would not mean the same records.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Sequence
from typing import Any

from .layout import History, new_frontier
from .settings import SchedulerSettings
from .sources import DataSource
from .steps import StepClock

STATE_VERSION = 5
"""The layout rules a state's positions refer to: with fewer files than shards, each shard shares at most two
files of a source (`layout.owner`/`readers`). Change it whenever those rules or this format change.
5: `held_out_share` (the documents the stream leaves out for evaluation) is part of the state."""
STATE_SCHEMA: dict[str, str] = {
    "version": "int: format version of this dict",
    "rank": "int: rank that saved it",
    "world_size": "int: number of ranks when saved",
    "num_workers": "int|None: DataLoader workers per rank (None: nothing consumed yet in this layout)",
    "seed": "int: the scheduler seed",
    "block_size": "int: records per shuffle block",
    "held_out_share": "float: share of documents held out for evaluation (by a hash of their text; heldout.py)",
    "batch_size": "int: windows per batch of one rank",
    "gradient_accumulation_steps": "int: batches per optimizer step",
    "tokens_per_step": "int: tokens per optimizer step over all ranks",
    "saved_in_worker": "bool: saved by a StatefulDataLoader worker (it restores worker order itself)",
    "sources": "{name: {files: int, crc: int}}: the file list each frontier refers to",
    "base_step": "int: optimizer step at which this layout started",
    "base_tokens": "int: tokens the whole run had seen when this layout started",
    "history": "{name: [{num_shards, frontiers: [frontier per old shard]}]}: frontiers of earlier layouts",
    "journal": "{settled: {step, weights, multipliers, changes}, pending: [{step, kind, weights|multipliers, reason, "
    "seq}]}: the mixture changes in force at `settled.step` folded into one state, and those taking effect later",
    "roles": "{role: shard snapshot}: per DataLoader worker role, the snapshot of its last consumed window",
    "totals": "{name: {tokens, documents}}: counters carried over from earlier layouts",
    "rotation": "int: the worker role whose batch comes next after a resume (DataLoader workers take turns)",
}
SHARD_SCHEMA: dict[str, str] = {
    "role": "int: DataLoader worker role within the rank",
    "shard": "int: rank * num_workers + role",
    "num_workers": "int: workers per rank",
    "windows": "int: windows this role emitted in this layout",
    "frontiers": "{name: {epoch, file, block, record, token, done}}",
    "multiplexer": "{target: [float], emitted: [int]}: deficit accounting",
    "skips": "{name: {reason: int}}",
    "tokens": "{name: int}",
    "documents": "{name: int}",
    "step": "int: optimizer step of the last window",
}


def fresh_state(settings: SchedulerSettings, sources: Sequence[DataSource], rank: int, world_size: int) -> dict:
    """The state of a rank that has consumed nothing (the journal is added when saved)."""
    return {
        "version": STATE_VERSION,
        "rank": rank,
        "world_size": world_size,
        "num_workers": None,
        "seed": settings.seed,
        "block_size": settings.block_size,
        "held_out_share": settings.held_out_share,
        "batch_size": settings.batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "tokens_per_step": settings.tokens_per_rank_step * world_size,
        "saved_in_worker": False,
        "sources": {s.name: file_signature(s.files) for s in sources},
        "base_step": 0,
        "base_tokens": 0,
        "history": {s.name: [] for s in sources},
        "roles": {},
        "totals": {},
        "rotation": 0,
    }


def check_version(state: dict[str, Any]) -> None:
    version = state.get("version")
    if version != STATE_VERSION:
        raise ValueError(
            f"OnlineDataScheduler: this data scheduler state was written as state version {version!r}; this "
            f"wonton_hf reads version {STATE_VERSION} only. Resume with the wonton_hf version that wrote it."
        )


def check_compatible(state: dict[str, Any], settings: SchedulerSettings, sources: Sequence[DataSource]) -> None:
    """Positions refer to one shuffle of one file list: a state saved under another is refused."""
    for name in ("seed", "block_size"):
        if state.get(name) != getattr(settings, name):
            raise ValueError(
                f"OnlineDataScheduler: the checkpoint was written with `{name}`={state.get(name)}, this scheduler "
                f"has {getattr(settings, name)}; positions refer to that shuffle, so build the scheduler with the "
                "same value."
            )
    if state.get("held_out_share") != settings.held_out_share:
        raise ValueError(
            f"OnlineDataScheduler: the checkpoint was written with `held_out_share`={state.get('held_out_share')}, "
            f"this scheduler has {settings.held_out_share}; resuming would train on documents held out for "
            "evaluation (or evaluate on trained ones), so use the same share."
        )
    for source in sources:
        saved = state["sources"].get(source.name)
        if saved is not None and saved != file_signature(source.files):
            raise ValueError(
                f"OnlineDataScheduler: the files of source `{source.name}` changed since the checkpoint "
                f"({saved['files']} files then, {len(source.files)} now); positions would not match. Restore "
                "the file list, or rename the source to start it afresh."
            )


def elastic_state(ranks: list[dict[str, Any]], fresh: dict[str, Any], settings: SchedulerSettings) -> dict:
    """`fresh` (this rank's new layout) continuing the saved `ranks`: old frontiers become one more history
    entry per source, and steps and tokens count on from where the old layout stopped."""
    state, old = fresh, ranks[0]
    state["journal"] = old["journal"]
    workers = {s["num_workers"] for s in ranks}
    if workers == {None}:  # nothing consumed in the old layout: it adds no history
        state.update(history=old["history"], base_step=old["base_step"], base_tokens=old["base_tokens"])
        state["totals"] = old.get("totals", {}) if state["rank"] == 0 else {}
        return state
    if len(workers) != 1:
        raise ValueError(f"OnlineDataScheduler: ranks of the checkpoint disagree on num_workers ({workers}).")
    num_workers, world = workers.pop(), old["world_size"]
    if sorted(s["rank"] for s in ranks) != list(range(world)):
        raise ValueError(
            f"OnlineDataScheduler: resuming on a different layout needs the states of all {world} ranks of the "
            "checkpoint; load `{'ranks': [state of rank 0, rank 1, ...]}` (DataSchedulerCallback does)."
        )
    for name in state["history"]:
        frontiers = _old_frontiers(ranks, name, num_workers)
        entry = {"num_shards": world * num_workers, "frontiers": frontiers}
        state["history"][name] = list(old["history"].get(name, [])) + [entry]
    steps = max(state_clock(s, settings).steps_consumed(windows(s)) for s in ranks)
    state["base_step"] = old["base_step"] + steps
    state["base_tokens"] = old["base_tokens"] + steps * old.get("tokens_per_step", state["tokens_per_step"])
    if state["rank"] == 0:
        state["totals"] = _sum_totals(ranks, list(state["history"]))
    return state


def regrouped_state(
    ranks: list[dict[str, Any]], fresh: dict[str, Any], settings: SchedulerSettings, num_workers: int
) -> dict | None:
    """`fresh` (this rank's new layout) taking over the old shards of the same numbers, or None when the layouts
    do not match shard for shard (then `elastic_state` applies).

    Shard `s` is `rank * num_workers + role` in both layouts and owns the same records (`layout.owner` depends
    on the shard count only), its multiplexer is seeded by `s`, and `StepClock` puts its windows in the same
    steps when every role contributes the same windows to a step in both layouts (`gradient_accumulation_steps`
    a multiple of the worker count, same batch size, same batches per role and step). The checkpoint must sit at
    a step boundary with every old shard at the same window count, as Trainer checkpoints do.
    """
    old = ranks[0]
    world = old["world_size"]
    workers = {s["num_workers"] for s in ranks}
    if len(workers) != 1 or None in workers or sorted(s["rank"] for s in ranks) != list(range(world)):
        return None
    old_workers = workers.pop()
    accumulation = old.get("gradient_accumulation_steps", settings.gradient_accumulation_steps)
    per_role = accumulation // old_workers  # batches each role gives a step
    if (
        world * old_workers != fresh["world_size"] * num_workers
        or old.get("batch_size") != settings.batch_size
        or old.get("tokens_per_step") != fresh["tokens_per_step"]
        or accumulation % old_workers
        or settings.gradient_accumulation_steps % num_workers
        or settings.gradient_accumulation_steps // num_workers != per_role
        or old.get("saved_in_worker")
    ):
        return None
    by_rank = {s["rank"]: s for s in ranks}
    snaps = [
        by_rank[shard // old_workers]["roles"].get(str(shard % old_workers)) for shard in range(world * old_workers)
    ]
    counts = {snap["windows"] if snap else 0 for snap in snaps}
    if len(counts) != 1 or counts.pop() % (settings.batch_size * per_role):
        return None  # not at a step boundary
    state = fresh
    state.update(history=old["history"], base_step=old["base_step"], base_tokens=old["base_tokens"])
    state.update(journal=old["journal"], num_workers=num_workers, totals={}, roles={})
    first = state["rank"] * num_workers
    for role in range(num_workers):
        shard = first + role
        if snaps[shard] is not None:
            state["roles"][str(role)] = {**copy.deepcopy(snaps[shard]), "role": role, "num_workers": num_workers}
        if shard % old_workers == 0:  # the first new owner of an old rank's shards takes its carried counters
            for name, carried in by_rank[shard // old_workers].get("totals", {}).items():
                mine = state["totals"].setdefault(name, {"tokens": 0, "documents": 0})
                mine["tokens"] += carried.get("tokens", 0)
                mine["documents"] += carried.get("documents", 0)
    return state


def _old_frontiers(ranks: list[dict[str, Any]], name: str, num_workers: int) -> list[dict[str, Any]]:
    """Where every shard of the old layout stood in source `name` (its layout start if it never emitted)."""
    frontiers: list[dict[str, Any]] = [{}] * (len(ranks) * num_workers)
    for s in ranks:
        files = s["sources"].get(name, {}).get("files", 0)
        start = new_frontier(History(s["history"].get(name, []), files, s["block_size"]).min_epoch())
        for role in range(num_workers):
            snap = s["roles"].get(str(role))
            frontiers[s["rank"] * num_workers + role] = snap["frontiers"].get(name, start) if snap else start
    return frontiers


def state_clock(state: dict[str, Any], settings: SchedulerSettings) -> StepClock:
    """The step arithmetic of a saved or live state (its own batch size and accumulation)."""
    return StepClock(
        state.get("batch_size", settings.batch_size),
        state.get("gradient_accumulation_steps", settings.gradient_accumulation_steps),
        state["num_workers"] or 1,
        state["base_step"],
    )


def rotation(state: dict[str, Any], settings: SchedulerSettings) -> int:
    """Which role the first batch after a resume must come from (DataLoader workers take turns)."""
    if not state["roles"] or state["num_workers"] is None or state.get("saved_in_worker"):
        return 0
    return state_clock(state, settings).rotation(windows(state))


def windows(state: dict[str, Any]) -> list[int]:
    """Windows each role of a state has had consumed (what `StepClock` counts steps from)."""
    return [snap["windows"] for snap in state["roles"].values()]


def file_signature(files: list[str]) -> dict[str, int]:
    return {"files": len(files), "crc": zlib.crc32("\n".join(files).encode())}


def _sum_totals(ranks: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, int]]:
    totals = {n: {"tokens": 0, "documents": 0} for n in names}
    for s in ranks:
        for name, t in s.get("totals", {}).items():
            if name in totals:
                totals[name]["tokens"] += t.get("tokens", 0)
                totals[name]["documents"] += t.get("documents", 0)
        for snap in s["roles"].values():
            for name in names:
                totals[name]["tokens"] += snap["tokens"].get(name, 0)
                totals[name]["documents"] += snap["documents"].get(name, 0)
    return totals


__all__ = [
    "SHARD_SCHEMA",
    "STATE_SCHEMA",
    "STATE_VERSION",
    "check_compatible",
    "check_version",
    "elastic_state",
    "regrouped_state",
    "file_signature",
    "fresh_state",
    "rotation",
    "state_clock",
    "windows",
]
