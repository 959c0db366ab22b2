"""The multiplexer: which source the next segment (a document, or part of one) comes from, and how long it may be.

Random draws by weight only reach the target shares on average, and a source with 1% weight drifts by
tens of percent over a few hundred windows. Like Megatron's blended dataset, we instead track each
source's *deficit*: the tokens it should have received under the weights in force when each token was
emitted, minus the tokens it did receive. Weight changes need no reset: targets accumulate with the weights
of the moment, so history stays settled and only new tokens follow the new weights.

Two refinements make the shares hold for small sources too, in *relative* terms (a 1.4% source within 1% of
1.4%, not within 1% of the whole stream):

- the next segment comes from the source furthest behind *relative to its weight* (deficit / weight), so a
  small source is not starved while a big one catches up a few tokens;
- a segment may overshoot its source's target by at most `tolerance` (relative) of that target, with a floor
  of `min_segment` tokens. A whole document from a 1.4% source would otherwise overshoot its target by tens
  of percent early in a run. The allowance grows with the target, so cuts happen only while a source has
  received few tokens (for a 1.4% source, allowances pass 2,048 tokens after about 30 M tokens at 0.5%):
  documents are whole, or cut only at window ends, for the rest of the run.

`stratified` restarts the accounting at every batch boundary, so each batch on its own matches the weights
up to one segment; the overshoot allowance is off then (it would cut documents of small sources in every batch).
The seed only orders ties, so two shards do not start with the same source.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np


class DeficitMultiplexer:
    """Per-source deficits as arrays: a pick and a record cost a few array operations whatever the number of
    sources (with 96 sources a Python loop over them, twice a segment, was most of the packing thread's time).
    Weights and availability change at most once a window, so they are set then (`set_weights`), not passed
    with every segment."""

    def __init__(
        self,
        names: list[str],
        seed: int,
        stratified: bool = False,
        tolerance: float | None = 0.005,
        min_segment: int = 64,
    ) -> None:
        self.names = names
        self.stratified = stratified
        self.tolerance = None if stratified else tolerance
        self.min_segment = min_segment
        rng = random.Random(seed)
        self._tiebreak = np.array([rng.random() * 1e-9 for _ in names], dtype=np.float64)
        self.target = np.zeros(len(names), dtype=np.float64)
        self.emitted = np.zeros(len(names), dtype=np.int64)
        self.weights = np.zeros(len(names), dtype=np.float64)
        self._divisor = np.ones(len(names), dtype=np.float64)
        self._offset = np.full(len(names), -np.inf)
        self._any = False

    def set_weights(self, weights: list[float] | np.ndarray, available: list[bool] | np.ndarray) -> None:
        """The weights in force (normalised over the available sources) and which sources still have data."""
        self.weights = np.asarray(weights, dtype=np.float64)
        ok = np.asarray(available, dtype=bool) & (self.weights > 0)
        self._divisor = np.where(ok, self.weights, 1.0)
        self._offset = np.where(ok, self._tiebreak, -np.inf)  # the tie-break, or never for those left out
        self._any = bool(ok.any())

    def pick(self) -> int | None:
        """Index of the source furthest behind its target, relative to its weight, among those with data left."""
        if not self._any:
            return None
        return int(((self.target - self.emitted) / self._divisor + self._offset).argmax())

    def allowance(self, source: int) -> int | None:
        """Most tokens `source` may give now without overshooting its target by more than the tolerance.

        Solves emitted + n <= (1 + tol) * (target + w * n) for n, since the target grows with the segment too.
        None: no limit (tolerance off, or a source so heavy that it cannot overshoot).
        """
        if self.tolerance is None:
            return None
        w = float(self.weights[source])
        slack = 1.0 - (1.0 + self.tolerance) * w
        if slack <= 0:
            return None
        room = (1.0 + self.tolerance) * float(self.target[source]) - int(self.emitted[source])
        return max(self.min_segment, math.floor(room / slack))

    def record(self, source: int, tokens: int) -> None:
        """`tokens` of `source` went into a window while the weights set last were in force."""
        self.emitted[source] += tokens
        self.target += self.weights * tokens

    def batch_boundary(self) -> None:
        if self.stratified:
            self.target[:] = 0.0
            self.emitted[:] = 0

    def drop(self, source: int) -> None:
        """Forget the deficit of a source that stopped (its weight goes to the others from now on)."""
        self.target[source] = float(self.emitted[source])

    def state_dict(self) -> dict[str, Any]:
        return {"target": self.target.tolist(), "emitted": self.emitted.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target = np.array([float(x) for x in state["target"]], dtype=np.float64)
        self.emitted = np.array([int(x) for x in state["emitted"]], dtype=np.int64)
