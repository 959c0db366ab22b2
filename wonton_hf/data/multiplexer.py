"""The multiplexer: which source the next segment (a document, or the rest of one) comes from.

Random draws by weight only reach the target shares on average, and a source with 1% weight drifts by
tens of percent over a few hundred windows. Like Megatron's blended dataset, we instead track each
source's *deficit*: the tokens it should have received under the weights in force when each token was
emitted, minus the tokens it did receive; the next document comes from the source furthest behind. The
realised shares then stay within one segment (at most one window) of the targets at every point. Weight changes need no
reset: targets accumulate with the weights of the moment, so history stays settled and only new tokens
follow the new weights.

`stratified` restarts the accounting at every batch boundary, so each batch on its own matches the weights
up to one segment.
The seed only orders ties, so two shards do not start with the same source.
"""

from __future__ import annotations

import random
from typing import Any


class DeficitMultiplexer:
    def __init__(self, names: list[str], seed: int, stratified: bool = False) -> None:
        self.names = names
        self.stratified = stratified
        rng = random.Random(seed)
        self._tiebreak = [rng.random() * 1e-9 for _ in names]
        self.target = [0.0] * len(names)
        self.emitted = [0] * len(names)

    def pick(self, weights: list[float], available: list[bool]) -> int | None:
        """Index of the source furthest behind its target among those with weight and data left."""
        best, best_score = None, None
        for i, (w, ok) in enumerate(zip(weights, available, strict=True)):
            if not ok or w <= 0:
                continue
            # Ranking by deficit + weight breaks the all-zero start in favour of the heaviest source.
            score = self.target[i] - self.emitted[i] + w + self._tiebreak[i]
            if best_score is None or score > best_score:
                best, best_score = i, score
        return best

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
