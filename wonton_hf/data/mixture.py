"""Mixture control: which share of the tokens each source gets, as a pure function of the step.

Four controls combine into one answer, `MixtureController.weights_at(step)`:
1. fixed weights (from the `DataSource`s);
2. a `WeightSchedule` over optimizer steps or tokens seen (piecewise constant or linear);
3. live edits (`set` entries: a re-read mixture file or an API call), validated before they are accepted;
4. loss feedback (`feedback` entries: multipliers from the EXP3 bandit of ODM, arXiv 2312.02406).

Edits and feedback are not applied "now" but appended to a *journal* with the step at which they take
effect. Every rank and every DataLoader worker evaluates the same journal at the same step, so they agree
on the weights without sharing memory, and a resumed run (the journal is part of the checkpoint) replays
exactly the same weights at exactly the same positions.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from .._problems import Problem, bound, raise_problems

logger = logging.getLogger(__name__)


def validate_weights(weights: Any, names: list[str], current: dict[str, float] | None = None) -> dict[str, float]:
    """Checks a weight edit; sources it leaves out keep their `current` weight. Raises ValueError with the reason."""
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"weights must be a non-empty mapping {{source: weight}}, got {weights!r}")
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; known sources are {names}")
    merged = dict(current or dict.fromkeys(names, 0.0))
    for name, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"weight of `{name}` must be a finite number >= 0, got {value!r}")
        merged[name] = float(value)
    if sum(merged.values()) <= 0:
        raise ValueError("all weights are zero; at least one source needs a weight > 0")
    return merged


def normalise(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()}


@dataclass
class WeightSchedule:
    """Weights as a function of the optimizer step or of tokens seen: curricula, final anneals.

    `points` are `(at, {source: weight})` with increasing `at`; before the first point its weights hold,
    after the last point the last weights hold. `constant` keeps each point's weights until the next
    point, `linear` interpolates between neighbouring points.
    """

    points: list[tuple[float, dict[str, float]]]
    """Breakpoints `(step or tokens, weights)`, strictly increasing."""
    unit: str = "step"
    """`step` (optimizer steps) or `tokens` (tokens seen by the whole run)."""
    interpolation: str = "constant"
    """`constant` (piecewise constant) or `linear`."""

    def __post_init__(self) -> None:
        if self.unit not in ("step", "tokens"):
            raise ValueError(f"WeightSchedule `unit` must be 'step' or 'tokens', got {self.unit!r}.")
        if self.interpolation not in ("constant", "linear"):
            raise ValueError(
                f"WeightSchedule `interpolation` must be 'constant' or 'linear', got {self.interpolation!r}."
            )
        points = [(p["at"], p["weights"]) if isinstance(p, dict) else tuple(p) for p in self.points]
        if not points:
            raise ValueError("WeightSchedule `points` is empty; give at least one (at, weights) pair.")
        ats = [float(at) for at, _ in points]
        if any(b <= a for a, b in zip(ats, ats[1:], strict=False)):
            raise ValueError(f"WeightSchedule `points` must have strictly increasing `at`, got {ats}.")
        self.points = [(float(at), dict(w)) for at, w in points]

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> WeightSchedule:
        return cls(**spec)

    def check(self, names: list[str]) -> None:
        for at, weights in self.points:
            try:
                validate_weights(weights, names)
            except ValueError as err:
                raise ValueError(f"WeightSchedule point at {at:g}: {err}") from err

    def __call__(self, position: float, names: list[str]) -> dict[str, float]:
        points = [(at, validate_weights(w, names)) for at, w in self.points]
        if position <= points[0][0]:
            return points[0][1]
        for (a, wa), (b, wb) in zip(points, points[1:], strict=False):
            if position < b:
                if self.interpolation == "constant":
                    return wa
                t = (position - a) / (b - a)
                return {n: (1 - t) * wa[n] + t * wb[n] for n in names}
        return points[-1][1]


@dataclass
class MixtureController:
    """Evaluates the weights at a step from the fixed weights, the schedule and the journal.

    The journal has constant size: entries that take effect at or before the earliest step anyone can still
    ask about (`fold`) are folded into `settled` (the last live edit and the last feedback multipliers in
    force), and only changes for later steps stay in `pending` (a few, within the lookahead). Each entry
    replaces the weights or multipliers of its kind wholesale, so the fold is exact: the weights of every
    step from the fold on are what the whole history would give, and `weights_at` never scans the past.
    """

    names: list[str]
    base: dict[str, float]
    schedule: WeightSchedule | None = None
    tokens_per_step: int = 1
    pending: list[dict[str, Any]] = field(default_factory=list)
    """Changes that take effect after `settled["step"]`, in step order."""
    settled: dict[str, Any] = field(default_factory=lambda: new_settled())
    """`{step, weights, multipliers, changes}`: what the folded entries left in force; `changes` counts them by kind."""

    def __post_init__(self) -> None:
        if self.schedule is not None:
            self.schedule.check(self.names)

    @property
    def sequence(self) -> int:
        """Entries appended so far (folded or not): entries carry it as `seq`, so copies skip what they have."""
        return sum(self.settled["changes"].values()) + len(self.pending)

    def count(self, kind: str) -> int:
        """Changes of `kind` (`set`, `feedback`) appended so far."""
        return self.settled["changes"].get(kind, 0) + sum(e["kind"] == kind for e in self.pending)

    def weights_at(self, step: int) -> dict[str, float]:
        """Normalised weights in force for the windows of optimizer step `step`."""
        base, multipliers = self._resolve(step)
        weights = {n: base[n] * multipliers.get(n, 1.0) for n in self.names}
        if sum(weights.values()) <= 0:  # feedback cannot revive a zeroed base; fall back to the base
            weights = base
        return normalise(weights)

    def base_at(self, step: int) -> dict[str, float]:
        """Normalised weights before loss feedback: fixed, scheduled, or the last live edit."""
        return normalise(self._resolve(step)[0])

    def _resolve(self, step: int) -> tuple[dict[str, float], dict[str, float]]:
        if step < self.settled["step"]:
            raise ValueError(
                f"mixture weights of step {step} were asked after the journal was folded up to step "
                f"{self.settled['step']}; those steps are consumed"
            )
        weights, multipliers = self.settled["weights"], self.settled["multipliers"]
        for entry in self.pending:
            if entry["step"] > step:
                break
            if entry["kind"] == "set":
                weights = entry["weights"]
            elif entry["kind"] == "feedback":
                multipliers = entry["multipliers"]
        base = dict(weights) if weights is not None else self._scheduled(step)
        return base, dict(multipliers) if multipliers is not None else dict.fromkeys(self.names, 1.0)

    def _scheduled(self, step: int) -> dict[str, float]:
        if self.schedule is None:
            return dict(self.base)
        position = step if self.schedule.unit == "step" else step * self.tokens_per_step
        return self.schedule(position, self.names)

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Adds a change (numbered with `seq`); returns it. A change for a folded step is refused."""
        last = self.pending[-1]["step"] if self.pending else self.settled["step"]
        if entry["step"] < last or entry["step"] <= self.settled["step"]:
            raise ValueError(f"journal entries must be in step order after step {last}: got step {entry['step']}")
        entry = {**entry, "seq": self.sequence}
        self.pending.append(entry)
        return entry

    def fold(self, step: int) -> None:
        """Folds the entries in force at `step` into `settled`; no later question may be about an earlier step."""
        if step <= self.settled["step"]:
            return
        settled = dict(self.settled, changes=dict(self.settled["changes"]), step=step)
        while self.pending and self.pending[0]["step"] <= step:
            entry = self.pending.pop(0)
            key = "weights" if entry["kind"] == "set" else "multipliers"
            settled[key] = dict(entry[key])
            settled["changes"][entry["kind"]] = settled["changes"].get(entry["kind"], 0) + 1
        self.settled = settled

    def state_dict(self) -> dict[str, Any]:
        return {"settled": copy.deepcopy(self.settled), "pending": copy.deepcopy(self.pending)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.settled = copy.deepcopy(state["settled"])
        self.pending = copy.deepcopy(state["pending"])

    def copy(self) -> MixtureController:
        """An independent copy (for a shard run: it folds and appends on its own)."""
        clone = copy.copy(self)
        clone.load_state_dict(self.state_dict())
        return clone


def new_settled() -> dict[str, Any]:
    return {"step": -1, "weights": None, "multipliers": None, "changes": {}}


_GENERATION = "journal_generation"
"""Key of the first line of a rewritten journal file (see `JournalChannel`)."""


class JournalChannel:
    """The journal as a JSON-lines file, so DataLoader worker processes see new entries.

    Workers are forked copies of the dataset: an entry appended in the main process after the fork is
    invisible to them unless it travels through something they can read. A local file costs one `stat`
    per window to poll and needs no extra process or socket. Every `compact_every` appends the main process
    rewrites the file with the pending entries only (a new file, renamed over the old one), so the file stays
    small over any number of changes. A rewritten file starts with a line naming its generation: a reader that
    finds another generation reads it from the start and skips the entries it has by their `seq`. Not the
    inode: ext4 hands a freed inode number back on the next rewrite, so after two rewrites between polls a
    reader would take the new file for the one it knew and read it from a stale offset. (Folded entries are
    safe to drop: every worker had read them before producing the windows of their step, which were consumed.)
    """

    compact_every = 1024

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime) at the last complete read
        self._generation: str | None = None
        self._appended = 0

    def write_all(self, entries: list[dict[str, Any]]) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps({_GENERATION: uuid.uuid4().hex}) + "\n")
            f.writelines(json.dumps(e, sort_keys=True) + "\n" for e in entries)
        os.replace(tmp, self.path)
        self._offset, self._seen, self._generation, self._appended = 0, None, None, 0

    def append(self, entry: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
        self._appended += 1

    def compact(self, pending: list[dict[str, Any]]) -> None:
        """Rewrites the file with `pending` once `compact_every` entries were appended since the last rewrite."""
        if self._appended >= self.compact_every:
            self.write_all(pending)

    def poll(self) -> list[dict[str, Any]]:
        """Entries appended since the last poll (complete lines only); all entries after a rewrite."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        if (st.st_ino, st.st_size, st.st_mtime_ns) == self._seen:
            return []
        with open(self.path, "rb") as f:
            st = os.fstat(f.fileno())  # the file opened, which a rewrite may have replaced since the stat
            first = f.readline()
            generation = json.loads(first).get(_GENERATION) if first.endswith(b"\n") else None
            if generation != self._generation or self._offset < len(first):
                self._generation, self._offset = generation, 0 if generation is None else len(first)
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        complete = end == len(data) and self._offset == st.st_size
        self._seen = (st.st_ino, st.st_size, st.st_mtime_ns) if complete else None
        return [json.loads(line) for line in data[:end].splitlines() if line.strip()]


@dataclass
class Exp3Feedback:
    """Online Data Mixing (ODM, arXiv 2312.02406): an EXP3 bandit whose reward is each source's training loss.

    A source whose loss stays high still has something to teach, so it earns weight. Unlike ODM, which trains
    on one source per batch and must importance-weight the reward, every batch here mixes all sources, so all
    rewards are observed each update and are used directly (full-information EXP3); the smoothed rewards are
    ODM's moving average. The resulting policy multiplies the base weights (fixed or scheduled), so feedback
    combines with a curriculum instead of replacing it.
    """

    smoothing: float = 0.9
    """Moving-average factor of the rewards (ODM's alpha)."""
    learning_rate: float | None = None
    """EXP3 step size per nat of smoothed loss; None: ODM's decaying `sqrt(ln K / (K t))`, which moves the policy
    little (rewards here are plain losses; ODM's are importance-weighted, K times larger). Larger steps (0.3-3,
    every step) moved weight from English to the small languages in the mixing experiment without improving the
    held-out loss weighted by the training mix (docs/experiments.md, mixing), so the default stays ODM's."""
    min_weight: float = 0.0
    """Lower clamp of each final (normalised) weight."""
    max_weight: float = 1.0
    """Upper clamp of each final (normalised) weight."""
    update_every: int = 10
    """Optimizer steps between two updates. The policy is exactly uniform for the first ~K ln K updates (the
    exploration floor): 20 updates, 200 steps at this default, for 9 sources."""
    enabled: bool = True

    def __post_init__(self) -> None:
        raise_problems("Exp3Feedback", self.problems())
        self._rewards: dict[str, float] = {}
        self._updates = 0

    def problems(self) -> list[Problem]:
        """What is wrong with the fields (the run-config check reports the same under `data.feedback`)."""
        found = [] if 0 <= self.smoothing < 1 else [("smoothing", f"must be in [0, 1), got {self.smoothing}")]
        found += bound(self, "learning_rate", 0, strict=True, optional=True) + bound(self, "update_every", 1)
        for name in ("min_weight", "max_weight"):
            if not 0 <= getattr(self, name) <= 1:
                found.append((name, f"must be in [0, 1], got {getattr(self, name)}"))
        if not found and self.min_weight > self.max_weight:
            found.append(("min_weight", f"got {self.min_weight}: must be <= max_weight ({self.max_weight})"))
        return found

    def update(self, losses: dict[str, float], base: dict[str, float]) -> dict[str, float]:
        """Per-source mean losses -> multipliers of the base weights (1.0 = unchanged)."""
        names = list(base)
        for name, loss in losses.items():
            previous = self._rewards.get(name, loss)
            self._rewards[name] = self.smoothing * previous + (1 - self.smoothing) * loss
        self._updates += 1
        k = len(names)
        eps = min(1.0 / k, math.sqrt(math.log(k) / (k * self._updates))) if k > 1 else 1.0
        rate = self.learning_rate if self.learning_rate is not None else eps
        rewards = [self._rewards.get(n, 0.0) for n in names]
        top = max(rewards)
        scores = [math.exp(rate * (r - top)) for r in rewards]
        total = sum(scores)
        policy = {n: (1 - k * eps) * s / total + eps if k > 1 else 1.0 for n, s in zip(names, scores, strict=True)}
        mixed = (
            normalise({n: base[n] * policy[n] for n in names}) if sum(base[n] * policy[n] for n in names) > 0 else base
        )
        clamped = self._clamp(mixed, active=[n for n in names if base[n] > 0])
        return {n: (clamped[n] / base[n] if base[n] > 0 else 1.0) for n in names}

    def _clamp(self, weights: dict[str, float], active: list[str]) -> dict[str, float]:
        """Clamps active weights into [min, max] while keeping the sum at 1 (a few fixed-point rounds)."""
        w = dict(weights)
        for _ in range(20):
            w = {n: (min(max(w[n], self.min_weight), self.max_weight) if n in active else 0.0) for n in w}
            total = sum(w.values())
            if total <= 0 or abs(total - 1) < 1e-9:
                break
            # Rescale only the weights inside the bounds: rescaling the clamped ones too pushed them out again,
            # and the rounds converged too slowly to end within the bounds (0.701 for a `max_weight` of 0.7).
            free = [n for n in active if self.min_weight < w[n] < self.max_weight]
            free_total = sum(w[n] for n in free)
            if free_total > 0 and total - free_total < 1:
                scale = (1 - (total - free_total)) / free_total
                w = {n: (v * scale if n in free else v) for n, v in w.items()}
            else:
                w = {n: v / total for n, v in w.items()}
        return w

    def state_dict(self) -> dict[str, Any]:
        return {"rewards": dict(self._rewards), "updates": self._updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rewards = dict(state.get("rewards", {}))
        self._updates = int(state.get("updates", 0))


__all__ = ["Exp3Feedback", "JournalChannel", "MixtureController", "WeightSchedule", "normalise", "validate_weights"]
