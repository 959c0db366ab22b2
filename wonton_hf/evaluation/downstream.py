"""`DownstreamEvaluation`: a few of the package's lm-eval tasks on the model in memory, at checkpoints.

No harness of our own and no checkpoint reload: lm-eval's `HFLM` accepts a model instance, so the weights the
Trainer is training are scored as they are, with the run's tokenizer, by `lm_eval.simple_evaluate` (the same
tasks, prompts and metrics as `wonton-hf eval`; local copies through the same offline task YAMLs). It runs on the
main process only, between two optimizer steps; the other ranks wait at a barrier. The model is the unwrapped
module (`accelerate.utils.extract_model_from_parallel`): under DDP and DeepSpeed ZeRO-1/2 every rank holds the
whole weights, so the main process can run forwards alone. ZeRO-3 and FSDP shard the weights, so a forward on one
rank is impossible; the run config refuses them (`RunConfig.file_problems`) and `on_train_begin` checks again.

The scores join the Trainer's log event of that step (the callback asks for one), as one metric family:
`eval_downstream/<task>/<metric>` (acc, acc_norm, perplexity: whatever the task reports) and
`eval_downstream/acc` (the plain mean over tasks), so TensorBoard shows them under `eval/downstream/`, and
`trainer_state.json` keeps them. Each evaluation's full lm-eval results are written to
`<output_dir>/downstream/step-<N>.json`.

Nothing the training depends on changes: the model's train/eval mode is restored, and so are Python's, NumPy's and
torch's random states (lm-eval seeds all three), so the data stream and a resumed run continue exactly as
without the callback.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from ..distributed import barrier, is_main_process
from .downstream_options import DownstreamOptions, resolve_tasks

logger = logging.getLogger(__name__)

METRIC_PREFIX = "eval_downstream/"
"""Every key this callback logs starts with it (TensorBoard: `eval/downstream/...`)."""


@dataclass(eq=False)
class DownstreamEvaluation(DownstreamOptions, TrainerCallback):
    """lm-eval tasks on the model in memory every `every_n_steps` and/or at each save; scores into the Trainer's log."""

    evaluations: int = field(default=0, init=False)
    _pending: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _task_manager: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.check_options()
        self.task_names = resolve_tasks(self.tasks)

    # ---- when

    def is_due(self, args: Any, state: Any) -> bool:
        """Whether the step just finished gets a downstream evaluation: the same answer on every rank."""
        step = state.global_step
        if self.every_n_steps and step % self.every_n_steps == 0:
            return True
        if not self.at_save:
            return False
        # `state.save_steps`: the Trainer's resolved interval (a ratio `save_steps` < 1 already turned into steps)
        every = state.save_steps if str(getattr(args.save_strategy, "value", args.save_strategy)) == "steps" else 0
        return step >= state.max_steps or bool(every and step % int(every) == 0)

    # ---- Trainer events

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not self.enabled:
            return
        refuse_sharded_weights(args, model)
        if is_main_process():
            self._task_manager = self._prepare_tasks(Path(args.output_dir) / "downstream" / "lm_eval_tasks")

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not self.enabled or not self.is_due(args, state):
            return
        if is_main_process():
            self._pending = self.evaluate(model, processing_class, Path(args.output_dir), state.global_step)
        barrier()
        control.should_log = True  # on every rank: the Trainer's log gathers the training loss over the ranks

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self._pending or logs is None or "loss" not in logs:
            return
        logs.update(self._pending)
        if state.log_history:
            state.log_history[-1].update(self._pending)
        self._pending = {}

    # ---- the evaluation

    def evaluate(self, model: Any, tokenizer: Any, output_dir: Path | None = None, step: int = 0) -> dict[str, float]:
        """Score `model` (unwrapped here) on the tasks; returns the metrics, leaves mode and random states as found."""
        import lm_eval
        from accelerate.utils import extract_model_from_parallel
        from lm_eval.models.huggingface import HFLM

        if tokenizer is None:
            raise ValueError("DownstreamEvaluation needs the run's tokenizer: give the Trainer `processing_class`.")
        if self._task_manager is None:
            self._task_manager = self._prepare_tasks(Path(output_dir or ".") / "downstream" / "lm_eval_tasks")
        if getattr(tokenizer, "pad_token", None) is None:  # lm-eval would give the run's own tokenizer a pad token
            tokenizer = copy.deepcopy(tokenizer)
        module = extract_model_from_parallel(model)
        was_training = module.training
        states = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=_rng_devices(module)):
                lm = HFLM(pretrained=module, tokenizer=tokenizer, batch_size=self.batch_size, backend="causal")
                results = lm_eval.simple_evaluate(
                    model=lm,
                    tasks=self.task_names,
                    task_manager=self._task_manager,
                    limit=self.limit,
                    log_samples=False,
                    bootstrap_iters=0,
                )
        finally:
            module.train(was_training)
            random.setstate(states[0])
            np.random.set_state(states[1])
        self.evaluations += 1
        if output_dir is not None:
            from .run import save_results

            save_results(results, output_dir / "downstream" / f"step-{step}.json")
        return downstream_metrics(results, self.task_names)

    def _prepare_tasks(self, folder: Path) -> Any:
        """lm-eval's TaskManager for the tasks: the built-ins (hub data) or our local-file variants of them."""
        from .suites import task_manager_for, write_offline_task_configs

        if self.data_dir is not None:
            write_offline_task_configs(folder, self.data_dir, self.task_names)
        else:
            folder.mkdir(parents=True, exist_ok=True)
        return task_manager_for(folder, offline=self.data_dir is not None)


def downstream_metrics(results: dict[str, Any], tasks: list[str]) -> dict[str, float]:
    """`eval_downstream/<task>/<metric>` for every numeric metric lm-eval reports per task (no stderr), plus
    `eval_downstream/acc`, the plain mean of the tasks' `acc`."""
    out: dict[str, float] = {}
    accuracies = []
    for task in tasks:
        for key, value in results["results"].get(task, {}).items():
            metric, comma, _ = key.partition(",")  # lm-eval's "<metric>,<filter>"; other keys (alias, sample_len)
            if not comma or metric.endswith("_stderr") or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if math.isfinite(value):
                out[f"{METRIC_PREFIX}{task}/{metric}"] = round(float(value), 4)
                if metric == "acc":
                    accuracies.append(float(value))
    if accuracies:
        out[f"{METRIC_PREFIX}acc"] = round(sum(accuracies) / len(accuracies), 4)
    return out


def refuse_sharded_weights(args: Any, model: Any) -> None:
    """A clear error where no single rank holds the whole weights (ZeRO-3, FSDP): one rank cannot run forwards."""
    deepspeed = getattr(args, "hf_deepspeed_config", None)
    sharded = None
    if deepspeed is not None and deepspeed.is_zero3():
        sharded = "DeepSpeed ZeRO-3"
    elif getattr(args, "fsdp", None) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in {"1", "true"}:
        sharded = "FSDP"
    elif model is not None and any(type(p).__name__ == "DTensor" for p in model.parameters()):
        sharded = "sharded (DTensor) parameters"
    if sharded:
        raise ValueError(
            f"downstream: lm-eval scores the model in memory on the main process, but under {sharded} no rank holds "
            "the whole weights. Use ZeRO-2 / DDP for this run, or set `downstream: null` and run `wonton-hf eval` "
            "on the saved checkpoints."
        )


def _rng_devices(module: Any) -> list[int]:
    device = next(module.parameters()).device
    return [device.index or 0] if device.type == "cuda" else []


__all__ = ["METRIC_PREFIX", "DownstreamEvaluation", "downstream_metrics", "refuse_sharded_weights"]
