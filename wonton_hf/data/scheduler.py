"""The Online Data Scheduler (paper section 2.2): an `IterableDataset` that streams, mixes, packs and resumes.

Data flows one way: sources -> per-source token streams (`stream`) -> multiplexer -> packer (one `shard.ShardRun`
per rank x DataLoader worker) -> collator -> model -> callbacks. The only edge back is the mixture journal
(`mixture.py`): callbacks append weight changes that take effect at a future optimizer step, and every shard reads
them at that step. Changes whose step every shard has passed are folded into one settled state, so the journal
has constant size. Which step a window belongs to is `steps.StepClock`'s answer, the same in every worker and the
main process.

Where each shard stands travels *with the data*: every window carries a small `data_state` snapshot (the
frontiers of its shard, the multiplexer accounting, counters). The collator keeps the last one of each batch,
the training callback hands it back to the scheduler object in the main process (`observe`), so
`state_dict()` describes exactly what the model consumed, not what DataLoader workers prefetched. This is
what torchdata's `StatefulDataLoader` does internally; the Trainer (5.23) neither builds that loader nor
saves its state, and the snapshot route also works with a plain `DataLoader` and any number of workers.
When the scheduler runs inside a `StatefulDataLoader` its `state_dict`/`load_state_dict` are the per-worker
hooks that loader calls. The state's format, version and carrying over to another layout are `resume`'s.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from . import resume
from .mixture import JournalChannel, MixtureController, WeightSchedule, validate_weights
from .settings import SchedulerSettings
from .shard import ShardRun
from .sources import DataSource, load_sources, validate_sources
from .steps import StepClock

logger = logging.getLogger(__name__)


class OnlineDataScheduler(IterableDataset):
    """Streams packed `seq_len` windows mixed from `sources` by weights that may change during training.

    Args:
        sources: `DataSource`s, or a YAML file/string with a `sources:` list.
        tokenizer: a fast tokenizer (`PreTrainedTokenizerFast` or `tokenizers.Tokenizer`).
        settings: a `SchedulerSettings` (how to read, mix and pack); the keyword `options` are its fields and
            override it (`OnlineDataScheduler(sources, tokenizer, seq_len=512, block_size=64)`). Token ids left
            None are taken from the tokenizer: EOS (required) and PAD (else 0); BOS is added only if given.
        rank, world_size: this process among the data-parallel ranks; None reads `RANK`/`WORLD_SIZE` (launcher).
        schedule: a `WeightSchedule` (or its dict) over steps or tokens.
        journal_dir: where the mixture journal file for DataLoader workers lives (default: the temp dir).
    """

    def __init__(
        self,
        sources: list[DataSource] | str,
        tokenizer: Any,
        *,
        settings: SchedulerSettings | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        schedule: WeightSchedule | dict[str, Any] | None = None,
        journal_dir: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.sources = load_sources(sources) if isinstance(sources, str) else list(sources)
        validate_sources(self.sources)
        self.names = [s.name for s in self.sources]
        self.backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        self.rank, self.world_size = _placement(rank, world_size)
        settings = SchedulerSettings(**options) if settings is None else replace(settings, **options)
        self.settings = _with_token_ids(settings, tokenizer, self.backend)
        if isinstance(schedule, dict):
            schedule = WeightSchedule.from_dict(schedule)
        weights = {s.name: float(s.weight) for s in self.sources}
        self.controller = MixtureController(self.names, weights, schedule, self.tokens_per_step)
        self.channel = _journal_channel(journal_dir, self.rank)
        weakref.finalize(self, _unlink, self.channel.path)  # only the original object cleans up, not worker copies
        self.lookahead_steps = 1
        """Steps between a mixture decision and its effect; the training callback sets it from the DataLoader."""
        self._loaded: list[dict[str, Any]] | None = None
        self._state = self._fresh_state()

    @property
    def tokens_per_step(self) -> int:
        return self.settings.tokens_per_rank_step * self.world_size

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
        settings = self.settings
        clock = StepClock(
            settings.batch_size, settings.gradient_accumulation_steps, num_workers, self._state["base_step"]
        )
        role = clock.role_of(worker, self._state.get("rotation", 0))
        run = ShardRun(
            settings,
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
        if snapshot["num_workers"] != self._state["num_workers"]:
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

    # ---- state ----

    def _fresh_state(self) -> dict[str, Any]:
        return resume.fresh_state(self.settings, self.sources, self.rank, self.world_size)

    def state_dict(self) -> dict[str, Any]:
        """The position of what was consumed, as a plain JSON-able dict (see `resume.STATE_SCHEMA`)."""
        if get_worker_info() is not None and getattr(self, "_live_run", None) is not None:
            # Inside a StatefulDataLoader worker: this worker's own position.
            self.observe(self._live_run.snapshot())
            self._state["saved_in_worker"] = True
        state = copy.deepcopy(self._state)
        state["journal"] = self.controller.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Accepts this rank's state, or `{"ranks": [state of every old rank]}` (needed when the world size changed)."""
        ranks = state["ranks"] if "ranks" in state else [state]
        for s in ranks:
            resume.check_version(s)
            resume.check_compatible(s, self.settings, self.sources)
        self._loaded = copy.deepcopy(ranks)
        same = all(s["world_size"] == self.world_size for s in ranks) and any(s["rank"] == self.rank for s in ranks)
        mine = next((s for s in ranks if s["rank"] == self.rank), None) if same else None
        self._state = copy.deepcopy(mine) if mine is not None else self._elastic_state(ranks)
        self._state["rotation"] = resume.rotation(self._state, self.settings)
        self.controller.load_state_dict(ranks[0]["journal"])
        self.controller.fold(self._settled_step())
        self.channel.write_all(self.controller.pending)

    def _elastic_state(self, ranks: list[dict[str, Any]]) -> dict[str, Any]:
        return resume.elastic_state(ranks, self._fresh_state(), self.settings)

    def _prepare_layout(self, num_workers: int) -> None:
        """A different worker count than saved turns an exact resume into an elastic one; after a change of world
        size, a worker count that keeps the shard count takes the old shards over as they stood."""
        saved = self._state["num_workers"]
        if saved is None and self._loaded is not None and self._loaded[0]["world_size"] != self.world_size:
            regrouped = resume.regrouped_state(self._loaded, self._fresh_state(), self.settings, num_workers)
            if regrouped is not None:
                self._state = regrouped
                self._state["rotation"] = resume.rotation(self._state, self.settings)
                if get_worker_info() is None:
                    logger.info(
                        "OnlineDataScheduler: world size x DataLoader workers %d x %d -> %d x %d: the same %d shards "
                        "continue where they stood; the stream is the uninterrupted run's.",
                        self._loaded[0]["world_size"],
                        self._loaded[0]["num_workers"],
                        self.world_size,
                        num_workers,
                        self.world_size * num_workers,
                    )
                return
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
        return resume.state_clock(self._state, self.settings).current_step(resume.windows(self._state))

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


def _placement(rank: int | None, world_size: int | None) -> tuple[int, int]:
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"OnlineDataScheduler: `rank` must be in [0, world_size={world_size}), got {rank}.")
    return rank, world_size


def _with_token_ids(settings: SchedulerSettings, tokenizer: Any, backend: Any) -> SchedulerSettings:
    """The settings with EOS and PAD filled in, so no shard or stream needs the tokenizer object for them."""
    eos = _special_id(tokenizer, backend, settings.eos_token_id, "eos", required=True)
    pad = _special_id(tokenizer, backend, settings.pad_token_id, "pad", required=False)
    return replace(settings, eos_token_id=eos, pad_token_id=pad)


def _special_id(tokenizer: Any, backend: Any, given: int | None, kind: str, required: bool) -> int:
    """From the argument, the transformers tokenizer, or the usual token strings of a bare `tokenizers` one."""
    if given is not None:
        return int(given)
    found = getattr(tokenizer, f"{kind}_token_id", None)
    candidates = {"eos": ("</s>", "<|endoftext|>", "<eos>"), "pad": ("<pad>", "<|pad|>")}[kind]
    for token in candidates if found is None and hasattr(backend, "token_to_id") else ():
        found = backend.token_to_id(token)
        if found is not None:
            break
    if found is None:
        if required:
            raise ValueError(
                f"OnlineDataScheduler: the tokenizer has no {kind.upper()} token; pass `{kind}_token_id=`."
            )
        return 0
    return int(found)


def _journal_channel(directory: str | None, rank: int) -> JournalChannel:
    """A fresh journal file (DataLoader workers are separate processes: they read the changes from it)."""
    handle, path = tempfile.mkstemp(
        prefix=f"wonton_mixture_rank{rank}_", suffix=".jsonl", dir=directory or tempfile.gettempdir()
    )
    os.close(handle)
    return JournalChannel(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


__all__ = ["OnlineDataScheduler"]
