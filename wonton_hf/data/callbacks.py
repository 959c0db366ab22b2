"""Trainer callbacks of the Online Data Scheduler: the training side of the one-way loop.

    sources -> multiplexer -> packer -> collator -> model -> callbacks -> (journal) -> multiplexer

`DataSchedulerCallback` sits at the model call. A forward pre-hook takes `source_ids` and `data_state` off
each training batch before the model sees them: `data_state` tells the scheduler object in this process what
was consumed (its `state_dict()` is saved with every checkpoint, one JSON per rank), and `source_ids` plus a
forward hook on the logits give the loss per source. Nothing goes back into the data stream except through
the scheduler's journal: `MixtureFileCallback` (live edits from a file) and `MixtureFeedbackCallback`
(EXP3 on the per-source loss) append weight changes that every rank and worker applies at the same future
step. A Trainer subclass would also work, but hooks keep the Trainer the training issue builds untouched.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from .mixture import Exp3Feedback
from .scheduler import OnlineDataScheduler

logger = logging.getLogger(__name__)

STATE_DIR = "data_scheduler"
"""Folder inside each Trainer checkpoint holding `rank{r}.json` (and `feedback.json`)."""


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _broadcast(obj: Any) -> Any:
    """Rank 0's decision for every rank (weights must agree everywhere)."""
    if not _distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def lookahead_steps(num_workers: int, prefetch_factor: int | None, gradient_accumulation_steps: int) -> int:
    """Optimizer steps between a mixture decision and its effect, so no worker has already produced those batches.

    Workers run at most `prefetch_factor` batches ahead each, Accelerate fetches one more, and the step in
    progress may still need its own batches.
    """
    ahead = 2 + (num_workers * ((prefetch_factor or 2) + 1) if num_workers > 0 else 0)
    return 1 + math.ceil(ahead / gradient_accumulation_steps)


@dataclass
class DataSchedulerCallback(TrainerCallback):
    """Tracks consumption, saves/restores the scheduler with checkpoints, logs `data/*` metrics per source."""

    scheduler: OnlineDataScheduler
    resume_from: str | None = None
    """Checkpoint to restore from when it is not `output_dir/checkpoint-<step>` (found automatically)."""
    enabled: bool = True
    _source_ids: torch.Tensor | None = field(default=None, init=False, repr=False)
    _loss_sum: torch.Tensor | None = field(default=None, init=False, repr=False)
    _loss_count: torch.Tensor | None = field(default=None, init=False, repr=False)
    _log_sum: torch.Tensor | None = field(default=None, init=False, repr=False)
    _log_count: torch.Tensor | None = field(default=None, init=False, repr=False)
    _handles: list[Any] = field(default_factory=list, init=False, repr=False)

    # ---- wiring ----

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if not self.enabled:
            return
        check_training_arguments(args)
        self._check_batching(args)
        if train_dataloader is not None:
            _undo_accelerate_sharding(train_dataloader, self.scheduler)
        self.scheduler.lookahead_steps = lookahead_steps(
            args.dataloader_num_workers, args.dataloader_prefetch_factor, args.gradient_accumulation_steps
        )
        if state.global_step > 0:
            self._restore(args, state)
        for handle in self._handles:
            handle.remove()
        self._handles = [
            model.register_forward_pre_hook(self._pre_hook, with_kwargs=True),
            model.register_forward_hook(self._post_hook, with_kwargs=True),
        ]

    def on_train_end(self, args, state, control, **kwargs):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _check_batching(self, args) -> None:
        s = self.scheduler
        for name, theirs in (
            ("batch_size", args.per_device_train_batch_size),
            ("gradient_accumulation_steps", args.gradient_accumulation_steps),
        ):
            if getattr(s, name) != theirs:
                raise ValueError(
                    f"OnlineDataScheduler `{name}`={getattr(s, name)} but the Trainer uses {theirs}; build the "
                    "scheduler with the same values (its workers derive the optimizer step from them)."
                )
        if s.world_size != args.world_size:
            raise ValueError(
                f"OnlineDataScheduler `world_size`={s.world_size} but the Trainer runs {args.world_size} processes; "
                "leave `rank`/`world_size` unset to take them from the launcher."
            )

    def _pre_hook(self, module, args, kwargs):
        source_ids = kwargs.pop("source_ids", None)
        data_state = kwargs.pop("data_state", None)
        if module.training:
            if data_state is not None:
                self.scheduler.observe(data_state)
            self._source_ids = source_ids
        return args, kwargs

    def _post_hook(self, module, args, kwargs, output):
        labels, source_ids = kwargs.get("labels"), self._source_ids
        self._source_ids = None
        logits = getattr(output, "logits", None)
        if not module.training or labels is None or source_ids is None or logits is None:
            return
        k = len(self.scheduler.names)
        sums = torch.zeros(k, dtype=torch.float64, device=logits.device)
        counts = torch.zeros(k, dtype=torch.float64, device=logits.device)
        with torch.no_grad():
            for row in range(logits.shape[0]):  # one row at a time bounds the float32 copy of the logits
                target = labels[row, 1:].to(logits.device)
                source = source_ids[row, 1:].to(logits.device)
                loss = F.cross_entropy(logits[row, :-1].float(), target, ignore_index=-100, reduction="none")
                valid = (target != -100) & (source >= 0)
                sums.index_add_(0, source[valid], loss[valid].double())
                counts.index_add_(0, source[valid], torch.ones_like(loss[valid], dtype=torch.float64))
        # Two windows over the same numbers: since the last feedback update, and since the last log event.
        self._loss_sum = sums if self._loss_sum is None else self._loss_sum + sums
        self._loss_count = counts if self._loss_count is None else self._loss_count + counts
        self._log_sum = sums if self._log_sum is None else self._log_sum + sums
        self._log_count = counts if self._log_count is None else self._log_count + counts

    def take_source_losses(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(loss sums, token counts) per source since the last call, summed over ranks; resets them."""
        if self._loss_sum is None:
            k, device = len(self.scheduler.names), _reduce_device() if _distributed() else "cpu"
            self._loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
            self._loss_count = torch.zeros(k, dtype=torch.float64, device=device)
        sums, counts = self._loss_sum.clone(), self._loss_count.clone()
        self._loss_sum.zero_()
        self._loss_count.zero_()
        if _distributed():
            torch.distributed.all_reduce(sums)
            torch.distributed.all_reduce(counts)
        return sums.cpu(), counts.cpu()

    def _take_log_losses(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Per-source loss sums and token counts since the last log event, summed over ranks; resets them."""
        k = len(self.scheduler.names)
        sums = self._log_sum if self._log_sum is not None else torch.zeros(k, dtype=torch.float64)
        counts = self._log_count if self._log_count is not None else torch.zeros(k, dtype=torch.float64)
        self._log_sum = self._log_count = None
        if _distributed():  # every rank takes part, whether or not it has seen a batch since the last log
            device = _reduce_device()
            sums, counts = sums.to(device), counts.to(device)
            torch.distributed.all_reduce(sums)
            torch.distributed.all_reduce(counts)
        return sums.cpu(), counts.cpu()

    # ---- checkpoints ----

    def on_save(self, args, state, control, **kwargs):
        if not self.enabled:
            return
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", STATE_DIR)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"rank{self.scheduler.rank}.json")
        with open(f"{path}.tmp", "w") as f:
            json.dump(self.scheduler.state_dict(), f)
        os.replace(f"{path}.tmp", path)

    def _restore(self, args, state) -> None:
        checkpoint = self.resume_from or _resume_dir(args, state)
        folder = os.path.join(checkpoint, STATE_DIR)
        files = (
            sorted(f for f in os.listdir(folder) if f.startswith("rank") and f.endswith(".json"))
            if os.path.isdir(folder)
            else []
        )
        if not files:
            raise FileNotFoundError(
                f"Resuming at step {state.global_step} but {folder} holds no data scheduler state; pass "
                "`DataSchedulerCallback(resume_from=<checkpoint dir>)` or resume from a checkpoint saved with it."
            )
        ranks = []
        for name in files:
            with open(os.path.join(folder, name)) as f:
                ranks.append(json.load(f))
        self.scheduler.load_state_dict({"ranks": ranks})
        logger.info("data scheduler restored from %s (%d rank states)", folder, len(ranks))

    # ---- logging ----

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.enabled or logs is None:
            return
        extra = self.metrics()
        logs.update(extra)
        if state.log_history:
            state.log_history[-1].update(extra)

    def metrics(self) -> dict[str, float]:
        """`data/loss/<source>` (mean training loss since the last log event) and
        `data/weight|tokens|documents|skipped/<source>`, over all ranks."""
        names = self.scheduler.names
        loss_sums, loss_counts = self._take_log_losses()
        stats = self.scheduler.stats()
        counts = torch.tensor(
            [[stats[n]["tokens"], stats[n]["documents"], sum(stats[n]["skipped"].values())] for n in names],
            dtype=torch.float64,
        )
        if _distributed():
            counts = counts.to(_reduce_device())
            torch.distributed.all_reduce(counts)
            counts = counts.cpu()
        out: dict[str, float] = {}
        for i, name in enumerate(names):
            if loss_counts is not None and loss_counts[i] > 0:
                out[f"data/loss/{name}"] = round(float(loss_sums[i] / loss_counts[i]), 4)
            out[f"data/weight/{name}"] = round(self.scheduler.weights[name], 6)
            out[f"data/tokens/{name}"] = int(counts[i, 0])
            out[f"data/documents/{name}"] = int(counts[i, 1])
            out[f"data/skipped/{name}"] = int(counts[i, 2])
        return out


def _reduce_device() -> torch.device:
    backend = torch.distributed.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def _resume_dir(args, state) -> str:
    given = getattr(args, "resume_from_checkpoint", None)
    if isinstance(given, str) and os.path.isdir(given):
        return given
    return os.path.join(args.output_dir, f"checkpoint-{state.global_step}")


def _undo_accelerate_sharding(dataloader: Any, scheduler: OnlineDataScheduler) -> None:
    """Accelerate wraps an IterableDataset in `IterableDatasetShard`, which keeps 1/world of *our* shard and drops
    the rest. The scheduler shards itself, so the wrapper is made a pass-through, as the Trainer does for its own
    rank-aware `BatchRebalanceSampler`."""
    dataset = getattr(dataloader, "dataset", None)
    if type(dataloader).__name__ == "DataLoaderDispatcher":
        raise ValueError(
            "The train DataLoader dispatches batches from rank 0, but OnlineDataScheduler shards itself; build the "
            "TrainingArguments with `wonton_hf.data.training_arguments(...)` (accelerator_config dispatch_batches=False)."
        )
    if type(dataset).__name__ == "IterableDatasetShard" and getattr(dataset, "dataset", None) is scheduler:
        dataset.num_processes = 1
        dataset.process_index = 0


def check_training_arguments(args) -> None:
    """The three TrainingArguments the scheduler needs; a clear error instead of silently wrong data."""
    config = args.accelerator_config
    dispatch = config.get("dispatch_batches") if isinstance(config, dict) else getattr(config, "dispatch_batches", None)
    problems = []
    if dispatch is not False and args.world_size > 1:
        problems.append("accelerator_config.dispatch_batches must be False (each rank reads its own shard)")
    if args.remove_unused_columns:
        problems.append("remove_unused_columns must be False (source_ids/data_state reach the callback)")
    if not args.ignore_data_skip:
        problems.append("ignore_data_skip must be True (the scheduler resumes itself; skipping batches would replay)")
    if problems:
        raise ValueError(
            "TrainingArguments not set up for OnlineDataScheduler: "
            + "; ".join(problems)
            + ". Build them with `wonton_hf.data.training_arguments(...)`."
        )


@dataclass
class MixtureFileCallback(TrainerCallback):
    """Live edits: re-reads a YAML/JSON mixture file every `every_n_steps` steps and journals valid changes.

    The file holds `{source: weight}` (or `weights: {source: weight}`); sources left out keep their weight.
    Rank 0 reads it and broadcasts, so all ranks journal the same change. An invalid edit (unknown source,
    negative, all zero, unreadable) is logged with its reason and the old weights stay.
    """

    scheduler: OnlineDataScheduler
    path: str
    every_n_steps: int = 50
    """Optimizer steps between two reads of the file."""
    enabled: bool = True
    _applied: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.every_n_steps < 1:
            raise ValueError(f"MixtureFileCallback `every_n_steps` must be >= 1, got {self.every_n_steps}.")

    def on_step_end(self, args, state, control, **kwargs):
        if not self.enabled or state.global_step % self.every_n_steps:
            return
        text = _broadcast(self._read() if not _distributed() or torch.distributed.get_rank() == 0 else None)
        if text is None or text == self._applied:
            return
        self._applied = text
        try:
            import yaml

            spec = yaml.safe_load(text)
            weights = spec.get("weights", spec) if isinstance(spec, dict) else spec
            step = self.scheduler.set_weights(weights, reason=f"mixture file {self.path}")
            logger.info("mixture file %s applied at step %d (read at step %d)", self.path, step, state.global_step)
        except Exception as err:  # yaml errors, validation errors: logged, weights unchanged
            logger.warning("mixture file %s rejected at step %d: %s", self.path, state.global_step, err)

    def _read(self) -> str | None:
        try:
            with open(self.path) as f:
                return f.read()
        except OSError as err:
            logger.warning("mixture file %s unreadable: %s", self.path, err)
            return None


@dataclass
class MixtureFeedbackCallback(TrainerCallback):
    """Loss-driven mixing: every `feedback.update_every` steps, the per-source training loss updates EXP3 weights."""

    tracker: DataSchedulerCallback
    feedback: Exp3Feedback = field(default_factory=Exp3Feedback)
    enabled: bool = True
    last_losses: dict[str, float] = field(default_factory=dict, init=False)

    def on_step_end(self, args, state, control, **kwargs):
        if not self.enabled or not self.feedback.enabled or state.global_step % self.feedback.update_every:
            return
        scheduler = self.tracker.scheduler
        sums, counts = self.tracker.take_source_losses()
        losses = {n: float(sums[i] / counts[i]) for i, n in enumerate(scheduler.names) if counts[i] > 0}
        self.last_losses = losses
        if not losses:
            return
        step = scheduler.next_effective_step()
        # Every rank updates its bandit with the same all-reduced losses; rank 0's result is broadcast so float
        # differences can never make two ranks mix differently.
        multipliers = _broadcast(self.feedback.update(losses, scheduler.controller.base_at(step)))
        scheduler.set_feedback(multipliers, step=step)

    def on_save(self, args, state, control, **kwargs):
        if not _distributed() or torch.distributed.get_rank() == 0:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", STATE_DIR)
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "feedback.json"), "w") as f:
                json.dump(self.feedback.state_dict(), f)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0:
            path = os.path.join(self.tracker.resume_from or _resume_dir(args, state), STATE_DIR, "feedback.json")
            if os.path.isfile(path):
                with open(path) as f:
                    self.feedback.load_state_dict(json.load(f))
