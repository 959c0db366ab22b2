"""`DataSchedulerCallback`: what the model consumed, saved with every checkpoint and restored on resume.

It sits at the model call. A forward pre-hook takes `source_ids` and `data_state` off each training batch
before the model sees them: `data_state` tells the scheduler object in this process what was consumed (its
`state_dict()` is saved with every checkpoint, one JSON per rank), and `source_ids` go to the
`SourceLossMeter` with the logits (a forward hook). A Trainer subclass would also work, but hooks keep the
Trainer untouched.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainerCallback

from ...distributed import all_reduce, is_distributed, reduce_device
from ..scheduler import OnlineDataScheduler
from ..steps import lookahead_steps
from .arguments import check_batching, check_training_arguments
from .source_loss import SourceLossMeter

logger = logging.getLogger(__name__)

STATE_DIR = "data_scheduler"
"""Folder inside each Trainer checkpoint holding `rank{r}.json` (and `feedback.json`)."""


def _returns_token_loss(module: torch.nn.Module) -> bool:
    """Whether the model's forward can return its per-token loss (Wonton's `return_token_loss`)."""
    cached = getattr(module, "_wonton_returns_token_loss", None)
    if cached is None:
        cached = "return_token_loss" in inspect.signature(module.forward).parameters
        module._wonton_returns_token_loss = cached
    return cached


def kwargs_hooks(handles: list[Any], model: Any = None, pre: Any = None, post: Any = None) -> list[Any]:
    """Remove `handles`, then (given a model) hook `pre`/`post` around its forward with the call's kwargs.

    The data callbacks read batch fields the model must not see (`source_ids`, `data_state`, `eval_index`) in a
    pre-hook that pops them, and the model's output in a post-hook; a second `on_train_begin` (the Trainer's resume
    path) must not stack a second pair."""
    for handle in handles:
        handle.remove()
    if model is None:
        return []
    return [
        model.register_forward_pre_hook(pre, with_kwargs=True),
        model.register_forward_hook(post, with_kwargs=True),
    ]


@dataclass
class DataSchedulerCallback(TrainerCallback):
    """Tracks consumption, saves/restores the scheduler with checkpoints, logs `data/*` metrics per source."""

    scheduler: OnlineDataScheduler
    resume_from: str | None = None
    """Checkpoint to restore from when it is not `output_dir/checkpoint-<step>` (found automatically)."""
    enabled: bool = True
    losses: SourceLossMeter | None = field(default=None, repr=False)
    """per-source loss of the training batches (made for the scheduler's sources when None)"""
    _source_ids: torch.Tensor | None = field(default=None, init=False, repr=False)
    _handles: list[Any] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.losses is None:
            self.losses = SourceLossMeter(len(self.scheduler.names))

    # ---- wiring ----

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if not self.enabled:
            return
        check_training_arguments(args)
        check_batching(self.scheduler, args)
        if train_dataloader is not None:
            _undo_accelerate_sharding(train_dataloader, self.scheduler)
        self.scheduler.lookahead_steps = lookahead_steps(
            args.dataloader_num_workers, args.dataloader_prefetch_factor, args.gradient_accumulation_steps
        )
        if state.global_step > 0:
            self._restore(args, state)
        self._handles = kwargs_hooks(self._handles, model, self._pre_hook, self._post_hook)

    def on_train_end(self, args, state, control, **kwargs):
        self._handles = kwargs_hooks(self._handles)

    def _pre_hook(self, module, args, kwargs):
        source_ids = kwargs.pop("source_ids", None)
        data_state = kwargs.pop("data_state", None)
        if module.training:
            if data_state is not None:
                self.scheduler.observe(data_state)
            self._source_ids = source_ids
            if source_ids is not None and _returns_token_loss(module):
                kwargs["return_token_loss"] = True  # the fused loss's per-token values: no second cross-entropy
        return args, kwargs

    def _post_hook(self, module, args, kwargs, output):
        labels, source_ids = kwargs.get("labels"), self._source_ids
        self._source_ids = None
        if not (module.training and labels is not None and source_ids is not None):
            return
        token_loss = getattr(output, "token_loss", None)
        if token_loss is not None:
            self.losses.add_token_losses(token_loss, labels, source_ids)
        elif getattr(output, "logits", None) is not None:
            self.losses.add(output.logits, labels, source_ids)

    def take_source_losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss sums, token counts) per source since the last call, summed over ranks; resets them."""
        return self.losses.take_for_feedback()

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
        checkpoint = self.resume_from or resume_dir(args, state)
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
        world = self.scheduler.world_size
        how = "same world size" if len(ranks) == world else f"saved by {len(ranks)} rank(s), now {world}: re-sharded"
        logger.info("Data scheduler resumed at step %d from %s (%s).", state.global_step, folder, how)

    # ---- logging ----

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.enabled or logs is None or "eval_loss" in logs:
            return  # an evaluation's log event: the data counts belong to the training log events
        extra = self.metrics()
        logs.update(extra)
        if state.log_history:
            state.log_history[-1].update(extra)

    def metrics(self) -> dict[str, float]:
        """`data/loss/<source>` (mean training loss since the last log event) and
        `data/weight|tokens|documents|skipped/<source>`, over all ranks."""
        names = self.scheduler.names
        out: dict[str, float] = self.losses.log_metrics(names)
        stats = self.scheduler.stats()
        counts = torch.tensor(
            [[stats[n]["tokens"], stats[n]["documents"], sum(stats[n]["skipped"].values())] for n in names],
            dtype=torch.float64,
        )
        if is_distributed():
            counts = all_reduce(counts.to(reduce_device()), "sum").cpu()
        for i, name in enumerate(names):
            out[f"data/weight/{name}"] = round(self.scheduler.weights[name], 6)
            out[f"data/tokens/{name}"] = int(counts[i, 0])
            out[f"data/documents/{name}"] = int(counts[i, 1])
            out[f"data/skipped/{name}"] = int(counts[i, 2])
        return out


def resume_dir(args, state) -> str:
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
