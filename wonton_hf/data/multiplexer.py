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


class DeficitMultiplexer:
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
        self._tiebreak = [rng.random() * 1e-9 for _ in names]
        self.target = [0.0] * len(names)
        self.emitted = [0] * len(names)

    def pick(self, weights: list[float], available: list[bool]) -> int | None:
        """Index of the source furthest behind its target, relative to its weight, among those with data left."""
        best, best_score = None, None
        for i, (w, ok) in enumerate(zip(weights, available, strict=True)):
            if not ok or w <= 0:
                continue
            score = (self.target[i] - self.emitted[i]) / w + self._tiebreak[i]
            if best_score is None or score > best_score:
                best, best_score = i, score
        return best

    def allowance(self, source: int, weights: list[float]) -> int | None:
        """Most tokens `source` may give now without overshooting its target by more than the tolerance.

        Solves emitted + n <= (1 + tol) * (target + w * n) for n, since the target grows with the segment too.
        None: no limit (tolerance off, or a source so heavy that it cannot overshoot).
        """
        if self.tolerance is None:
            return None
        w = weights[source]
        slack = 1.0 - (1.0 + self.tolerance) * w
        if slack <= 0:
            return None
        room = (1.0 + self.tolerance) * self.target[source] - self.emitted[source]
        return max(self.min_segment, math.floor(room / slack))

    def record(self, source: int, tokens: int, weights: list[float]) -> None:
        """`tokens` of `source` went into a window while `weights` were in force."""
        self.emitted[source] += tokens
        for i, w in enumerate(weights):
            self.target[i] += w * tokens

    def batch_boundary(self) -> None:
        if self.stratified:
            self.target = [0.0] * len(self.names)
            self.emitted = [0] * len(self.names)

    def drop(self, source: int) -> None:
        """Forget the deficit of a source that stopped (its weight goes to the others from now on)."""
        self.target[source] = float(self.emitted[source])

    def state_dict(self) -> dict[str, Any]:
        return {"target": list(self.target), "emitted": list(self.emitted)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target = [float(x) for x in state["target"]]
        self.emitted = [int(x) for x in state["emitted"]]
