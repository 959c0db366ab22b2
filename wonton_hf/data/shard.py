"""One shard's stream (one rank x DataLoader worker): its source streams, multiplexer and packer, and the snapshot
of where it stands, attached to every window it yields.

Data flows one way here: `stream.SourceStream`s -> `multiplexer` -> `packing` -> window (+ snapshot). The only
thing that comes back is the mixture journal, read from its file at each window (`mixture.JournalChannel`).
A shard never reads the scheduler object: it is built from the settings, the step clock of its layout, the history
of earlier layouts, its own copy of the mixture controller and its start snapshot, so a DataLoader worker runs it
from what it was forked or pickled with.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .mixture import JournalChannel, MixtureController
from .multiplexer import DeficitMultiplexer
from .packing import fill_window, window_tensors
from .settings import SchedulerSettings
from .sources import DataSource
from .steps import StepClock
from .stream import Encode, SourceStream

logger = logging.getLogger(__name__)


class ShardRun:
    """One shard's stream, from a start snapshot (`resume.SHARD_SCHEMA`; None: the start of its layout)."""

    def __init__(
        self,
        settings: SchedulerSettings,
        sources: Sequence[DataSource],
        encode: Encode,
        clock: StepClock,
        *,
        role: int,
        shard: int,
        num_shards: int,
        history: dict[str, list[dict[str, Any]]],
        controller: MixtureController,
        channel_path: str,
        start: dict[str, Any] | None,
    ) -> None:
        self.settings = settings
        self.names = [s.name for s in sources]
        self.clock = clock
        self.role = role
        self.num_workers = clock.num_workers
        self.shard = shard
        start = start or {}
        # One tokenizer thread per shard run, shared by its sources: batches are encoded in the order the
        # sources ask for them, and the thread is created in the process that iterates (a DataLoader worker).
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="wonton-tokenize")
            if settings.prefetch_blocks > 0
            else None
        )
        self.streams = self._open_streams(sources, encode, num_shards, history, start)
        self.mux = self._multiplexer(start.get("multiplexer"))
        self.controller = controller
        self.channel = JournalChannel(channel_path)
        self.windows = start.get("windows", 0)
        self.tokens = dict(start.get("tokens", {}))
        self.documents = dict(start.get("documents", {}))
        self.step = start.get("step", -1)
        self._weights_cache: tuple[Any, list[float]] | None = None
        self._sent_skips: dict[str, dict[str, int]] = start.get("skips", {})
        self._window_weights: list[float] = []
        # The file holds the changes since the journal was last loaded; those this copy of the controller already
        # has (a worker forked after they were made) are skipped by their sequence number.
        self._pending = self.channel.poll()

    def _multiplexer(self, state: dict[str, Any] | None) -> DeficitMultiplexer:
        settings = self.settings
        mux = DeficitMultiplexer(
            self.names,
            seed=settings.seed * 1_000_003 + self.shard,
            stratified=settings.stratified,
            tolerance=settings.share_tolerance,
            min_segment=settings.min_segment_tokens,
        )
        if state is not None:
            mux.load_state_dict(state)
        return mux

    def _open_streams(
        self,
        sources: Sequence[DataSource],
        encode: Encode,
        num_shards: int,
        history: dict[str, list[dict[str, Any]]],
        start: dict[str, Any],
    ) -> list[SourceStream]:
        frontiers, skips = start.get("frontiers", {}), start.get("skips", {})
        return [
            SourceStream(
                source,
                self.settings,
                self.shard,
                num_shards,
                self._submit,
                encode,
                frontier=frontiers.get(source.name),
                history=history.get(source.name, []),
                skips=skips.get(source.name),
            )
            for source in sources
        ]

    def _sources_with_data(self) -> tuple[bool, ...]:
        return tuple(not st.exhausted for st in self.streams)

    def _submit(self, job: Callable[[], Any]) -> Future[Any] | Any:
        return job() if self._executor is None else self._executor.submit(job)

    def effective_weights(self, step: int, available: tuple[bool, ...] | None = None) -> list[float]:
        if available is None:
            available = self._sources_with_data()
        key = (step, available, self.controller.sequence)
        if self._weights_cache is None or self._weights_cache[0] != key:
            weights = self.controller.weights_at(step)
            masked = {n: (w if ok else 0.0) for (n, w), ok in zip(weights.items(), available, strict=True)}
            total = sum(masked.values())
            values = [v / total for v in masked.values()] if total > 0 else [0.0] * len(masked)
            self._weights_cache = (key, values)
        return self._weights_cache[1]

    def _poll_journal(self, step: int) -> None:
        entries, self._pending = self._pending + self.channel.poll(), []
        for entry in entries:
            if entry["seq"] < self.controller.sequence:
                continue
            if entry["step"] <= self.step:
                raise RuntimeError(
                    f"mixture change for step {entry['step']} reached data shard {self.shard} after it had produced "
                    f"windows for step {self.step}; the change would not be applied consistently. Raise "
                    "`OnlineDataScheduler.lookahead_steps` (set from the DataLoader prefetch by the callback)."
                )
            self.controller.append(entry)

    def _set_mux_weights(self, available: tuple[bool, ...] | None = None) -> None:
        """Weights and availability change only here (a new window, a source that ran out), not per segment."""
        if available is None:
            available = self._sources_with_data()
        self.mux.set_weights(self._window_weights, available)

    def next_chunk(self, room: int) -> tuple[int, list[int]] | None:
        """The next segment: the source furthest behind gives the rest of its current document, up to `room`.

        The source is chosen at every segment, not every document. A document is cut where the window ends, or
        where its source would overshoot its share by more than the tolerance (`DeficitMultiplexer.allowance`;
        only while the source has received few tokens); its rest comes later, when its source is due again, as
        a new segment (positions restart). Shares then track the weights even when documents are long.
        """
        while True:
            source = self.mux.pick()
            if source is None:
                return None
            allowance = self.mux.allowance(source)
            stream = self.streams[source]
            taken = stream.take(room if allowance is None else min(room, allowance))
            if taken is None:  # exhausted with `stop`: its weight goes to the others
                self.mux.drop(source)
                logger.info("source %s exhausted on shard %d", self.names[source], self.shard)
                self._window_weights = self.effective_weights(self.step)
                self._set_mux_weights()
                continue
            tokens, finished = taken
            name = self.names[source]
            self.mux.record(source, len(tokens))
            if stream.exhausted:  # that was its last document: not picked again (its weight goes at the next window)
                self._set_mux_weights()
            self.tokens[name] = self.tokens.get(name, 0) + len(tokens)
            if finished:
                self.documents[name] = self.documents.get(name, 0) + 1
            return source, tokens

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            yield from self._windows()
        finally:
            # An iterator left open until the interpreter exits is closed while modules are torn down: the
            # executor's own exit hook has stopped its thread by then, and shutting it down would only print a
            # traceback ("'NoneType' object has no attribute 'Empty'").
            if self._executor is not None and not sys.is_finalizing():
                self._executor.shutdown(wait=False, cancel_futures=True)

    def _windows(self) -> Iterator[dict[str, Any]]:
        while True:
            step = self.clock.step_of_window(self.role, self.windows)
            self._poll_journal(step)
            self.controller.fold(step)
            if self.windows % self.clock.batch_size == 0:
                self.mux.batch_boundary()
            available = self._sources_with_data()
            self._window_weights = self.effective_weights(step, available)
            self._set_mux_weights(available)
            self.step = step
            window = fill_window(self.settings.seq_len, self.next_chunk, self.settings.pad_token_id)
            if window is None:
                self._report_unsent_skips()
                return
            self.windows += 1
            item = window_tensors(window)
            item["data_state"] = self.snapshot()
            self._sent_skips = item["data_state"]["skips"]
            yield item

    def _report_unsent_skips(self) -> None:
        """Skips met after the last window of a finite stream ride on no snapshot, so the scheduler's `stats()`
        cannot count them: they are logged here instead of being lost silently."""
        for st in self.streams:
            sent = self._sent_skips.get(st.source.name, {})
            late = {reason: n - sent.get(reason, 0) for reason, n in st.skips.counts.items() if n > sent.get(reason, 0)}
            if late:
                logger.warning(
                    "source %s: %s skipped after the last window of shard %d (not in the scheduler's stats)",
                    st.source.name,
                    ", ".join(f"{n} {reason}" for reason, n in sorted(late.items())),
                    self.shard,
                )

    def snapshot(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "shard": self.shard,
            "num_workers": self.num_workers,
            "windows": self.windows,
            "frontiers": {st.source.name: dict(st.frontier) for st in self.streams},
            "multiplexer": self.mux.state_dict(),
            "skips": {st.source.name: dict(st.skips.counts) for st in self.streams},
            "tokens": dict(self.tokens),
            "documents": dict(self.documents),
            "step": self.step,
        }


__all__ = ["ShardRun"]
