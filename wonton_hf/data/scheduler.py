"""The Online Data Scheduler (paper section 2.2): an `IterableDataset` that streams, mixes, packs and resumes.

Data flows one way: sources -> per-source pipeline (`pipeline.SourceStream`) -> multiplexer -> packer ->
collator -> model -> callbacks. The only edge back is the mixture journal (`mixture.py`): callbacks append
weight changes that take effect at a future optimizer step, and every shard reads them at that step. Changes
whose step every shard has passed are folded into one settled state, so the journal has constant size.
Which step a window belongs to is `steps.StepClock`'s answer, the same in every worker and the main process.

Where each shard stands travels *with the data*: every window carries a small `data_state` snapshot (the
frontiers of its shard, the multiplexer accounting, counters). The collator keeps the last one of each batch,
the training callback hands it back to the scheduler object in the main process (`observe`), so
`state_dict()` describes exactly what the model consumed, not what DataLoader workers prefetched. This is
what torchdata's `StatefulDataLoader` does internally; the Trainer (5.23) neither builds that loader nor
saves its state, and the snapshot route also works with a plain `DataLoader` and any number of workers.
When the scheduler runs inside a `StatefulDataLoader` its `state_dict`/`load_state_dict` are the per-worker
hooks that loader calls.

State (a JSON-able dict per rank; `STATE_SCHEMA` documents it and a test checks it):
positions are computed from it, never replayed. With the same world size and worker count the stream
continues window for window; otherwise the old frontiers become history and no record is lost or repeated.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import tempfile
import weakref
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from .mixture import JournalChannel, MixtureController, WeightSchedule, journal_from_entries, validate_weights
from .multiplexer import DeficitMultiplexer
from .packing import fill_window, window_tensors
from .pipeline import DEFAULT_BUFFER_TOKENS, History, SourceStream, min_buffer_tokens, new_frontier
from .sources import DataSource, load_sources, validate_sources
from .steps import StepClock

logger = logging.getLogger(__name__)

STATE_VERSION = 4
"""4: with fewer files than shards, each shard shares at most two files of a source (`pipeline.owner`/`readers`).
3: a source with fewer files than shards is split by records, not blocks (`pipeline.owner`).
2: the journal is folded (`{settled, pending}`); version-1 states (a list of every change) are migrated on load."""
STATE_SCHEMA: dict[str, str] = {
    "version": "int: format version of this dict",
    "rank": "int: rank that saved it",
    "world_size": "int: number of ranks when saved",
    "num_workers": "int|None: DataLoader workers per rank (None: nothing consumed yet in this layout)",
    "seed": "int: the scheduler seed",
    "block_size": "int: records per shuffle block",
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


def _backend(tokenizer: Any) -> Any:
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


class OnlineDataScheduler(IterableDataset):
    """Streams packed `seq_len` windows mixed from `sources` by weights that may change during training.

    Args:
        sources: `DataSource`s, or a YAML file/string with a `sources:` list.
        tokenizer: a fast tokenizer (`PreTrainedTokenizerFast` or `tokenizers.Tokenizer`).
        seq_len: tokens per window.
        seed: seeds file order, shuffle blocks and multiplexer tie-breaks.
        rank, world_size: this process among the data-parallel ranks; None reads `RANK`/`WORLD_SIZE` (launcher).
        batch_size: windows per batch of one rank (`per_device_train_batch_size`): batches are the unit of
            `stratified` and, with `gradient_accumulation_steps`, how a worker knows the optimizer step.
        gradient_accumulation_steps: batches per optimizer step.
        block_size: records per shuffle block (the shuffle buffer).
        stratified: every batch matches the weights up to one document (instead of the stream as a whole).
        schedule: a `WeightSchedule` (or its dict) over steps or tokens.
        eos_token_id, pad_token_id, bos_token_id: default from the tokenizer; BOS is added only if given.
        journal_dir: where the mixture journal file for DataLoader workers lives (default: the temp dir).
        share_tolerance: how far (relative) a segment may take its source beyond its target share; longer
            documents are cut there and continue later. None: never cut except at window ends (see `multiplexer`).
        min_segment_tokens: the shortest segment such a cut leaves (no cut yields fewer tokens).
        prefetch_blocks: tokenizer batches per source read and tokenized ahead in a background thread (the
            tokenizer runs without the GIL, so encoding overlaps reading and packing); 0 tokenizes in the
            iterating thread, in small batches (there a big batch only makes a long stall). (The name predates
            batches: whole blocks are no longer tokenized at once.)
        buffer_tokens: per source and shard, the token ids held ahead of the packer (4 bytes each): the batches
            being tokenized or packed hold at most about this many tokens, whatever the document length or
            `block_size` (see `pipeline.SourceStream`). Raise it for throughput with few sources, lower it for
            memory with many.
    """

    def __init__(
        self,
        sources: list[DataSource] | str,
        tokenizer: Any,
        seq_len: int = 2048,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        *,
        batch_size: int = 1,
        gradient_accumulation_steps: int = 1,
        block_size: int = 1024,
        stratified: bool = False,
        schedule: WeightSchedule | dict[str, Any] | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        journal_dir: str | None = None,
        prefetch_blocks: int = 1,
        buffer_tokens: int = DEFAULT_BUFFER_TOKENS,
        share_tolerance: float | None = 0.005,
        min_segment_tokens: int = 64,
    ) -> None:
        super().__init__()
        self.sources = load_sources(sources) if isinstance(sources, str) else list(sources)
        validate_sources(self.sources)
        self.names = [s.name for s in self.sources]
        self.backend = _backend(tokenizer)
        self._tokenizer = tokenizer
        self.seq_len = _positive("seq_len", seq_len)
        self.seed = int(seed)
        self.rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
        self.world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"OnlineDataScheduler: `rank` must be in [0, world_size={self.world_size}), got {self.rank}."
            )
        self.batch_size = _positive("batch_size", batch_size)
        self.gradient_accumulation_steps = _positive("gradient_accumulation_steps", gradient_accumulation_steps)
        self.block_size = _positive("block_size", block_size)
        if not isinstance(prefetch_blocks, int) or prefetch_blocks < 0:
            raise ValueError(
                f"OnlineDataScheduler: `prefetch_blocks` must be an integer >= 0, got {prefetch_blocks!r}."
            )
        self.prefetch_blocks = prefetch_blocks
        if not isinstance(buffer_tokens, int) or buffer_tokens < min_buffer_tokens(prefetch_blocks):
            raise ValueError(
                f"OnlineDataScheduler: `buffer_tokens` must be an integer >= {min_buffer_tokens(prefetch_blocks)} "
                f"(one text piece per batch held with `prefetch_blocks`={prefetch_blocks}), got {buffer_tokens!r}."
            )
        self.buffer_tokens = buffer_tokens
        if share_tolerance is not None and not (isinstance(share_tolerance, int | float) and share_tolerance >= 0):
            raise ValueError(
                f"OnlineDataScheduler: `share_tolerance` must be None or a number >= 0, got {share_tolerance!r}."
            )
        self.share_tolerance = share_tolerance
        self.min_segment_tokens = _positive("min_segment_tokens", min_segment_tokens)
        self.stratified = bool(stratified)
        self.eos_token_id = self._special_id(tokenizer, eos_token_id, "eos", required=True)
        self.pad_token_id = self._special_id(tokenizer, pad_token_id, "pad", required=False)
        self.bos_token_id = bos_token_id
        if isinstance(schedule, dict):
            schedule = WeightSchedule.from_dict(schedule)
        self.controller = MixtureController(
            self.names, {s.name: float(s.weight) for s in self.sources}, schedule, self.tokens_per_step
        )
        directory = journal_dir or tempfile.gettempdir()
        handle, path = tempfile.mkstemp(prefix=f"wonton_mixture_rank{self.rank}_", suffix=".jsonl", dir=directory)
        os.close(handle)
        self.channel = JournalChannel(path)
        weakref.finalize(self, _unlink, path)  # only the original object cleans up, not worker copies
        self.lookahead_steps = 1
        """Steps between a mixture decision and its effect; the training callback sets it from the DataLoader."""
        self._loaded: list[dict[str, Any]] | None = None
        self._state = self._fresh_state()

    # ---- configuration helpers ----

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.batch_size * self.gradient_accumulation_steps * self.world_size

    def _special_id(self, tokenizer: Any, given: int | None, kind: str, required: bool) -> int:
        """From the argument, the transformers tokenizer, or the usual token strings of a bare `tokenizers` one."""
        if given is not None:
            return int(given)
        found = getattr(tokenizer, f"{kind}_token_id", None)
        candidates = {"eos": ("</s>", "<|endoftext|>", "<eos>"), "pad": ("<pad>", "<|pad|>")}[kind]
        for token in candidates if found is None and hasattr(self.backend, "token_to_id") else ():
            found = self.backend.token_to_id(token)
            if found is not None:
                break
        if found is None:
            if required:
                raise ValueError(
                    f"OnlineDataScheduler: the tokenizer has no {kind.upper()} token; pass `{kind}_token_id=`."
                )
            return 0
        return int(found)

    def encode(self, texts: list[str]) -> list[Any]:
        """Batched fast encoding; the stream turns the `Encoding`s into int32 arrays in the same job."""
        if not texts:
            return []
        return self.backend.encode_batch_fast(texts, add_special_tokens=False)

    # ---- iteration ----

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        num_workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        self._prepare_layout(num_workers)
        clock = StepClock(self.batch_size, self.gradient_accumulation_steps, num_workers, self._state["base_step"])
        role = clock.role_of(worker, self._state.get("rotation", 0))
        run = _ShardRun(
            self._shard_settings(),
            self.sources,
            self.encode,
            clock,
            role=role,
            shard=self.rank * num_workers + role,
            num_shards=self.world_size * num_workers,
            history=self._state["history"],
            controller=self.controller.copy(),
            channel_path=self.channel.path,
            start=self._role_start(role, num_workers),
        )
        self._live_run = run  # what a StatefulDataLoader worker's `state_dict` reports
        for item in run:
            if info is None:
                self.observe(item["data_state"])
            yield item

    def observe(self, snapshot: dict[str, Any]) -> None:
        """Records that the window carrying `snapshot` was consumed (main process)."""
        if self._state["num_workers"] is not None and snapshot["num_workers"] != self._state["num_workers"]:
            self._prepare_layout(snapshot["num_workers"])
        self._state["num_workers"] = snapshot["num_workers"]
        self._state["roles"][str(snapshot["role"])] = snapshot
        self.controller.fold(self._settled_step())
        self.channel.compact(self.controller.pending)

    def _settled_step(self) -> int:
        """The earliest step any shard of this rank may still produce windows for (journal entries before it fold)."""
        roles = self._state["roles"]
        if self._state["num_workers"] is None or len(roles) < self._state["num_workers"]:
            return self._state["base_step"]
        # one step less: `weights` asks about the last consumed step, which may precede every role's last window
        return max(self._state["base_step"], min(snap["step"] for snap in roles.values()) - 1)

    def _shard_settings(self) -> ShardSettings:
        return ShardSettings(
            names=tuple(self.names),
            seq_len=self.seq_len,
            seed=self.seed,
            block_size=self.block_size,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            bos_token_id=self.bos_token_id,
            stratified=self.stratified,
            share_tolerance=self.share_tolerance,
            min_segment_tokens=self.min_segment_tokens,
            prefetch_blocks=self.prefetch_blocks,
            buffer_tokens=self.buffer_tokens,
        )

    def _clock(self, state: dict[str, Any] | None = None) -> StepClock:
        """The step arithmetic of a saved or live state (its own batch size and accumulation)."""
        state = self._state if state is None else state
        return StepClock(
            state.get("batch_size", self.batch_size),
            state.get("gradient_accumulation_steps", self.gradient_accumulation_steps),
            state["num_workers"] or 1,
            state["base_step"],
        )

    # ---- state ----

    def _fresh_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_workers": None,
            "seed": self.seed,
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "tokens_per_step": self.tokens_per_step,
            "saved_in_worker": False,
            "sources": {s.name: _file_signature(s.files) for s in self.sources},
            "base_step": 0,
            "base_tokens": 0,
            "history": {name: [] for name in self.names},
            "roles": {},
            "totals": {},
            "rotation": 0,
        }

    def state_dict(self) -> dict[str, Any]:
        """The position of what was consumed, as a plain JSON-able dict (see `STATE_SCHEMA`)."""
        if get_worker_info() is not None and getattr(self, "_live_run", None) is not None:
            # Inside a StatefulDataLoader worker: this worker's own position.
            self.observe(self._live_run.snapshot())
            self._state["saved_in_worker"] = True
        state = copy.deepcopy(self._state)
        state["journal"] = self.controller.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Accepts this rank's state, or `{"ranks": [state of every old rank]}` (needed when the world size changed)."""
        ranks = [_migrated(s, self.names) for s in (state["ranks"] if "ranks" in state else [state])]
        for s in ranks:
            self._check_sources(s)
        self._loaded = copy.deepcopy(ranks)
        same = all(s["world_size"] == self.world_size for s in ranks) and any(s["rank"] == self.rank for s in ranks)
        mine = next((s for s in ranks if s["rank"] == self.rank), None) if same else None
        self._state = copy.deepcopy(mine) if mine is not None else self._elastic_state(ranks)
        self._state["rotation"] = self._rotation(self._state)
        self.controller.load_state_dict(ranks[0]["journal"])
        self.controller.fold(self._settled_step())
        self.channel.write_all(self.controller.pending)

    def _check_sources(self, state: dict[str, Any]) -> None:
        for name in ("seed", "block_size"):
            if state.get(name) != getattr(self, name):
                raise ValueError(
                    f"OnlineDataScheduler: the checkpoint was written with `{name}`={state.get(name)}, this scheduler "
                    f"has {getattr(self, name)}; positions refer to that shuffle, so build the scheduler with the same value."
                )
        for source in self.sources:
            saved = state["sources"].get(source.name)
            if saved is not None and saved != _file_signature(source.files):
                raise ValueError(
                    f"OnlineDataScheduler: the files of source `{source.name}` changed since the checkpoint "
                    f"({saved['files']} files then, {len(source.files)} now); positions would not match. Restore "
                    "the file list, or rename the source to start it afresh."
                )

    def _elastic_state(self, ranks: list[dict[str, Any]]) -> dict[str, Any]:
        """A new layout: old frontiers become one more history entry per source."""
        state = self._fresh_state()
        old = ranks[0]
        state["journal"] = old["journal"]
        workers = {s["num_workers"] for s in ranks}
        if workers == {None}:  # nothing consumed in the old layout: it adds no history
            state.update(history=old["history"], base_step=old["base_step"], base_tokens=old["base_tokens"])
            state["totals"] = old.get("totals", {}) if self.rank == 0 else {}
            return state
        if len(workers) != 1:
            raise ValueError(f"OnlineDataScheduler: ranks of the checkpoint disagree on num_workers ({workers}).")
        num_workers = workers.pop()
        world = old["world_size"]
        if sorted(s["rank"] for s in ranks) != list(range(world)):
            raise ValueError(
                f"OnlineDataScheduler: resuming on a different layout needs the states of all {world} ranks of the "
                "checkpoint; load `{'ranks': [state of rank 0, rank 1, ...]}` (DataSchedulerCallback does)."
            )
        shards = world * num_workers
        for name in self.names:
            frontiers = [None] * shards
            for s in ranks:
                for role in range(num_workers):
                    snap = s["roles"].get(str(role))
                    start = _role_start_frontier(s, name)
                    frontiers[s["rank"] * num_workers + role] = snap["frontiers"].get(name, start) if snap else start
            state["history"][name] = list(old["history"].get(name, [])) + [
                {"num_shards": shards, "frontiers": frontiers}
            ]
        steps = max(self._clock(s).steps_consumed(_windows(s)) for s in ranks)
        state["base_step"] = old["base_step"] + steps
        state["base_tokens"] = old["base_tokens"] + steps * old.get("tokens_per_step", self.tokens_per_step)
        if self.rank == 0:
            state["totals"] = _sum_totals(ranks, self.names)
        return state

    def _rotation(self, state: dict[str, Any]) -> int:
        """Which role the first batch after a resume must come from (DataLoader workers take turns)."""
        if not state["roles"] or state["num_workers"] is None or state.get("saved_in_worker"):
            return 0
        return self._clock(state).rotation(_windows(state))

    def _prepare_layout(self, num_workers: int) -> None:
        """A different worker count than saved turns an exact resume into an elastic one."""
        saved = self._state["num_workers"]
        if saved is not None and saved != num_workers:
            logger.warning(
                "OnlineDataScheduler: checkpoint had %d DataLoader workers per rank, now %d; resuming without loss "
                "or repetition, but the stream differs from the uninterrupted one.",
                saved,
                num_workers,
            )
            self._state = self._elastic_state([self._state] if self._loaded is None else self._loaded)
            self._state["rotation"] = 0

    def _role_start(self, role: int, num_workers: int) -> dict[str, Any] | None:
        snap = self._state["roles"].get(str(role))
        return copy.deepcopy(snap) if snap is not None and snap["num_workers"] == num_workers else None

    # ---- mixture control (main process) ----

    @property
    def current_step(self) -> int:
        return self._clock().current_step(_windows(self._state))

    @property
    def weights(self) -> dict[str, float]:
        """Normalised weights of the last step consumed: what a log line at the Trainer's `global_step` trained on.

        Scheduler steps count from 0, so the Trainer's optimizer step `global_step = N` consumed the batches of
        scheduler step N - 1; before any step, the weights of the first.
        """
        return self.controller.weights_at(max(self.current_step - 1, self._state["base_step"]))

    def next_effective_step(self) -> int:
        return self.current_step + self.lookahead_steps

    def set_weights(self, weights: dict[str, float], step: int | None = None, reason: str = "api") -> int:
        """Validates and journals a weight change; returns the (0-based) scheduler step at which it takes effect.

        Its batches are those of the Trainer's optimizer step `global_step = step + 1`, the first log line that
        shows the new weights.

        Sources left out keep their weight. A rejected change raises ValueError and leaves the weights as they are.
        """
        effective = self.next_effective_step() if step is None else int(step)
        try:
            merged = validate_weights(weights, self.names, self.controller.weights_at(effective))
        except ValueError as err:
            logger.warning("mixture change rejected (%s): %s; weights unchanged", reason, err)
            raise ValueError(f"mixture change rejected: {err}") from err
        self._journal({"step": effective, "kind": "set", "weights": merged, "reason": reason})
        return effective

    def set_feedback(self, multipliers: dict[str, float], step: int | None = None) -> int:
        effective = self.next_effective_step() if step is None else int(step)
        self._journal({"step": effective, "kind": "feedback", "multipliers": multipliers, "reason": "loss feedback"})
        return effective

    def _journal(self, entry: dict[str, Any]) -> None:
        entry = self.controller.append(entry)
        self.channel.append(entry)
        logger.info(
            "mixture change (%s) takes effect at global_step %d (its batches are the first with the new mix): %s",
            entry["reason"],
            entry["step"] + 1,
            {k: round(v, 4) for k, v in self.controller.weights_at(entry["step"]).items()},
        )

    def stats(self) -> dict[str, dict[str, Any]]:
        """Tokens, documents and skips (per reason) per source, over the consumed windows of this rank."""
        out = {s.name: {"language": s.language, "tokens": 0, "documents": 0, "skipped": {}} for s in self.sources}
        for name, totals in self._state.get("totals", {}).items():
            if name in out:
                out[name]["tokens"] += totals.get("tokens", 0)
                out[name]["documents"] += totals.get("documents", 0)
        for snap in self._state["roles"].values():
            for name in self.names:
                out[name]["tokens"] += snap["tokens"].get(name, 0)
                out[name]["documents"] += snap["documents"].get(name, 0)
                for reason, n in snap["skips"].get(name, {}).items():
                    out[name]["skipped"][reason] = out[name]["skipped"].get(reason, 0) + n
        return out


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"OnlineDataScheduler: `{name}` must be a positive integer, got {value!r}.")
    return value


def _file_signature(files: list[str]) -> dict[str, int]:
    return {"files": len(files), "crc": zlib.crc32("\n".join(files).encode())}


def _windows(state: dict[str, Any]) -> list[int]:
    """Windows each role of a state has had consumed (what `StepClock` counts steps from)."""
    return [snap["windows"] for snap in state["roles"].values()]


def _migrated(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A state of this version. Version 1 differs by its journal (a list), folded here. A source with fewer files
    than shards was split otherwise before (versions 1-2: by blocks; 3: each record to every shard in turn, so every
    shard read every file): old positions mean the same now only where every source had at least as many files
    as shards, in the saved layout and in its history; other states are refused."""
    version = state.get("version")
    if version not in (1, 2, 3, STATE_VERSION):
        raise ValueError(
            f"OnlineDataScheduler: data scheduler state version {version!r} is not one this wonton_hf reads "
            f"(1 to {STATE_VERSION}); resume with the wonton_hf version that wrote it."
        )
    if version == STATE_VERSION:
        return state
    layouts = [state["world_size"] * state["num_workers"]] if state.get("num_workers") is not None else []
    for name, saved in state["sources"].items():
        if name not in names:  # not read by this scheduler
            continue
        shards = layouts + [entry["num_shards"] for entry in state["history"].get(name, [])]
        if any(saved["files"] < n for n in shards):
            split = "by blocks" if version < 3 else "by records over every shard"
            raise ValueError(
                f"OnlineDataScheduler: this data scheduler state (version {version}) split source `{name}` "
                f"({saved['files']} files) over {max(shards)} shards {split}; this wonton_hf gives each shard the "
                "records of at most two such files, so its positions do not carry over. Resume with the wonton_hf "
                "version that wrote the state, or rename the source (it then starts afresh)."
            )
    journal = journal_from_entries(state["journal"]) if version == 1 else state["journal"]
    return {**state, "version": STATE_VERSION, "journal": journal}


def _role_start_frontier(state: dict[str, Any], name: str) -> dict[str, Any]:
    history = state["history"].get(name, [])
    return new_frontier(
        History(history, state["sources"].get(name, {}).get("files", 0), state["block_size"]).min_epoch()
    )


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


@dataclass(frozen=True)
class ShardSettings:
    """What a shard run needs of the scheduler's configuration (a shard never reads the scheduler itself)."""

    names: tuple[str, ...]
    seq_len: int
    seed: int
    block_size: int
    eos_token_id: int
    pad_token_id: int
    bos_token_id: int | None
    stratified: bool
    share_tolerance: float | None
    min_segment_tokens: int
    prefetch_blocks: int
    buffer_tokens: int


class _ShardRun:
    """One shard's stream: its source pipelines, multiplexer and packer, with the snapshot of its position.

    Built from its inputs only: the settings, the step clock of its layout, the history of earlier layouts,
    its own copy of the mixture controller and the journal file that brings later changes.
    """

    def __init__(
        self,
        settings: ShardSettings,
        sources: list[DataSource],
        encode: Callable[[list[str]], list[Any]],
        clock: StepClock,
        *,
        role: int,
        shard: int,
        num_shards: int,
        history: dict[str, list[dict[str, Any]]],
        controller: MixtureController,
        channel_path: str,
        start: dict[str, Any] | None,
    ):
        self.settings = settings
        self.names = list(settings.names)
        self.clock = clock
        # One tokenizer thread per shard run, shared by its sources: batches are encoded in the order the
        # sources ask for them, and the thread is created in the process that iterates (a DataLoader worker).
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="wonton-tokenize")
            if settings.prefetch_blocks > 0
            else None
        )
        self.role = role
        self.num_workers = clock.num_workers
        self.shard = shard
        start = start or {}
        frontiers = start.get("frontiers", {})
        skips = start.get("skips", {})
        self.streams = [
            SourceStream(
                source,
                settings.seed,
                shard,
                num_shards,
                settings.block_size,
                self._submit,
                encode,
                settings.eos_token_id,
                frontier=frontiers.get(source.name),
                history=history.get(source.name, []),
                skips=skips.get(source.name),
                bos_id=settings.bos_token_id,
                read_ahead=settings.prefetch_blocks,
                buffer_tokens=settings.buffer_tokens,
            )
            for source in sources
        ]
        self.mux = DeficitMultiplexer(
            self.names,
            seed=settings.seed * 1_000_003 + shard,
            stratified=settings.stratified,
            tolerance=settings.share_tolerance,
            min_segment=settings.min_segment_tokens,
        )
        if "multiplexer" in start:
            self.mux.load_state_dict(start["multiplexer"])
        self.controller = controller
        self.channel = JournalChannel(channel_path)
        self.windows = start.get("windows", 0)
        self.tokens = dict(start.get("tokens", {}))
        self.documents = dict(start.get("documents", {}))
        self.step = start.get("step", -1)
        self._weights_cache: tuple[Any, list[float]] | None = None
        self._sent_skips: dict[str, dict[str, int]] = skips
        self._window_weights: list[float] = []
        # The file holds the changes since the journal was last loaded; those this copy of the controller already
        # has (a worker forked after they were made) are skipped by their sequence number.
        self._pending = self.channel.poll()

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


__all__ = ["OnlineDataScheduler", "SHARD_SCHEMA", "STATE_SCHEMA"]
