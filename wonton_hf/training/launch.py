"""From a `RunConfig` to a ready `transformers.Trainer`: tokenizer, model, data scheduler, arguments, callbacks.

`examples/pretrain.py` is a thin wrapper around `build_trainer` + `run`. The training loop is the HF
Trainer's own; this module only decides what the paper decides (optimizer, schedule, batch in tokens,
precision) and refuses launches that would silently train duplicate copies (see `check_launch`). The
`TrainingArguments` fields pretraining and SFT share are mapped once (`common_training_arguments`,
`optimizer_arguments`); SFT builds its `SFTConfig` from the same two.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from ..checkpointing.completion import ensure_completion_marking
from ..checkpointing.protocol import resume_plan
from ..data import DataSource, OnlineDataScheduler, PackedWindowCollator, attach, load_sources, training_arguments
from ..data.callbacks import data_report, format_data_report, write_data_report
from ..data.mixture import Exp3Feedback
from ..distributed import barrier, is_main_process, world_size
from ..distributed import shutdown as shutdown
from ..models.wonton import WontonConfig, WontonForCausalLM
from .config import RunConfig, dump_run_config
from .console import use_console

logger = logging.getLogger(__name__)

PATH_VARIABLES = {
    "{stdlib}": sysconfig.get_paths()["stdlib"],
    "{package_data}": str(Path(__file__).resolve().parent.parent / "demo" / "data"),
}
"""Placeholders allowed in source paths: the running interpreter's standard library (a ready code corpus) and
the multilingual samples shipped with the package."""


class LaunchError(ValueError):
    """The process was started in a way that cannot train correctly; the message says how to launch."""


def _parent_command_line() -> list[str]:
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _requested_processes(argv: list[str]) -> int | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--num_processes="):
            return int(arg.split("=", 1)[1])
        if arg == "--num_processes" and i + 1 < len(argv):
            return int(argv[i + 1])
    return None


def check_launch(config: Any, script: str = "examples/pretrain.py") -> None:
    """Refuse starts that would not train what the user asked for.

    The traps, measured with accelerate 1.15 and DeepSpeed 0.19 on CPU machines: a DeepSpeed config in a
    process no launcher started fails deep inside DeepSpeed (`No module named 'mpi4py'`); `accelerate launch
    --cpu --num_processes 2` starts one process; `use_cpu: false` with several processes and no CUDA device
    makes each process train its own copy. `config` is any run config with `train.deepspeed` and
    `train.use_cpu` (pretraining and SFT share this).
    """
    launched = "WORLD_SIZE" in os.environ
    if config.train.deepspeed and not launched:
        raise LaunchError(
            "`train.deepspeed` is set but this process was not started by a distributed launcher (plain `python` "
            "fails inside DeepSpeed with `No module named 'mpi4py'`). Launch with:\n"
            f"  accelerate launch --config_file examples/configs/accelerate/deepspeed_zero2.yaml {script} ...\n"
            "or, without a GPU: --config_file examples/configs/accelerate/deepspeed_zero2_cpu.yaml"
        )
    parent = _parent_command_line()
    requested = _requested_processes(parent) if any("accelerate" in part for part in parent[:3]) else None
    if not launched and requested and requested > 1:
        raise LaunchError(
            f"`accelerate launch` was asked for {requested} processes but started one (it does so with `--cpu`). "
            f"Two CPU processes: `accelerate launch --config_file examples/configs/accelerate/multi_cpu.yaml {script}` "
            f"or `torchrun --nproc_per_node 2 {script}`."
        )
    if launched and world_size() > 1 and config.train.use_cpu is False and not torch.cuda.is_available():
        raise LaunchError(
            "`train.use_cpu: false` with several processes and no CUDA device: each process would train its own "
            "copy. Remove the setting (CPU is chosen automatically) or run on GPUs."
        )


def expand_path(path: str) -> str:
    for name, value in PATH_VARIABLES.items():
        path = path.replace(name, value)
    return path


def build_sources(config: RunConfig) -> list[DataSource]:
    specs = [{**spec.model_dump(), "paths": [expand_path(p) for p in spec.paths]} for spec in config.data.sources]
    sources = load_sources(specs)
    for source in sources:
        source.resolve()  # missing files fail here, before the model is built
    return sources


def build_tokenizer(config: RunConfig, sources: list[DataSource]) -> PreTrainedTokenizerFast:
    """The configured tokenizer, or one trained on the run's own sources (once, saved in the run directory)."""
    from ..tokenization import train_tokenizer

    if config.tokenizer.path:
        return AutoTokenizer.from_pretrained(config.tokenizer.path)
    target = config.run_dir / "tokenizer"
    if is_main_process() and not (target / "tokenizer.json").is_file():
        limit = config.tokenizer.max_documents_per_source
        logger.info(
            "Training a %d-piece tokenizer on up to %d documents per source", config.tokenizer.vocab_size, limit
        )
        # The sources themselves (not their texts): the trainer's skip counts are then its readers' own.
        # train_tokenizer logs its summary (documents, bytes, skips per source and reason)
        train_tokenizer(
            sources, vocab_size=config.tokenizer.vocab_size, max_documents_per_source=limit, output_dir=target
        )
        logger.info("Tokenizer saved to %s", target)
    elif is_main_process():
        logger.info("Tokenizer: reusing %s (trained at the run's first start)", target)
    barrier()
    return AutoTokenizer.from_pretrained(target)


def build_model(config: RunConfig, tokenizer: PreTrainedTokenizerFast) -> WontonForCausalLM:
    attn = config.model.attn_implementation or "sdpa"
    if config.model.init_from:
        return AutoModelForCausalLM.from_pretrained(config.model.init_from, attn_implementation=attn)
    fields = {
        "vocab_size": len(tokenizer),
        "max_position_embeddings": max(
            config.data.seq_len, WontonConfig.from_preset(config.model.preset).max_position_embeddings
        ),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        **config.model.overrides,
    }
    model_config = WontonConfig.from_preset(config.model.preset, **fields)
    model_config._attn_implementation = attn
    return WontonForCausalLM(model_config)


def deepspeed_on_cpu_state() -> dict[str, Any]:
    """A DeepSpeed process state over gloo, made before `TrainingArguments` and handed to it.

    accelerate 1.15 drops DeepSpeed when told `cpu`, and without `cpu` on a CUDA-less machine it counts one
    process while DeepSpeed counts all of them (batch-size assertion, or silently unsharded training).
    Opening the state ourselves with an explicit gloo backend gives DeepSpeed's CPU accelerator and the
    Trainer the same world.
    """
    from accelerate import PartialState

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(cpu=False, backend="gloo")
    return {"accelerator_config": {"use_configured_state": True}}


def precision_flags(precision: str, use_cpu: bool) -> dict[str, bool]:
    """`auto`: bf16 on CUDA devices that support it, fp32 otherwise (CPU bf16 autocast is slower here)."""
    if precision == "auto":
        precision = "bf16" if not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def device_arguments(train: Any) -> dict[str, Any]:
    """`use_cpu`, the precision flags and, for DeepSpeed on a CUDA-less machine, the process state it needs.

    `train` is the `train` section of a pretraining or SFT run config (`use_cpu`, `deepspeed`, `precision`):
    both build their arguments through here, so the accelerate/DeepSpeed world-size trap is handled once.
    """
    use_cpu = train.use_cpu if train.use_cpu is not None else not torch.cuda.is_available()
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # else DeepSpeed, if installed, warns that it guessed CPU
    extra: dict[str, Any] = {}
    if use_cpu and train.deepspeed:
        use_cpu, extra = False, deepspeed_on_cpu_state()
    return {"use_cpu": use_cpu, **precision_flags(train.precision, use_cpu), **extra}


CHECKPOINTING_ARGUMENT = (
    "activation_checkpointing"
    if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
    else "gradient_checkpointing"
)
"""transformers 5.24 renamed `gradient_checkpointing` (the old name warns); 5.23 knows only the old one."""


def common_training_arguments(config: Any) -> dict[str, Any]:
    """The `TrainingArguments` fields every run sets the same way, from a pretraining or SFT run config."""
    train = config.train
    return dict(
        output_dir=str(config.run_dir),
        run_name=config.run_name,
        per_device_train_batch_size=train.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps(world_size()),
        **{CHECKPOINTING_ARGUMENT: train.gradient_checkpointing},
        deepspeed=train.deepspeed,
        logging_steps=train.logging_steps,
        save_steps=train.save_steps,
        save_total_limit=train.save_total_limit,
        report_to=train.report_to,
        seed=train.seed,
        data_seed=train.seed,
        **device_arguments(train),  # use_cpu, precision, and the DeepSpeed-on-CPU process state
    )


def optimizer_arguments(opt: Any) -> dict[str, Any]:
    """AdamW and the LR schedule from an `OptimizerFields` section (pretraining's `optimizer`, SFT's `train`)."""
    return dict(
        learning_rate=opt.learning_rate,
        adam_beta1=opt.betas[0],
        adam_beta2=opt.betas[1],
        weight_decay=opt.weight_decay,
        max_grad_norm=opt.max_grad_norm,
        lr_scheduler_type=opt.lr_scheduler_type,
    )


def scheduler_kwargs(opt: Any, max_steps: int) -> dict[str, Any]:
    """`lr_scheduler_kwargs` for the schedules whose floor or phases the run config sets (transformers' own
    schedulers: `get_cosine_with_min_lr_schedule_with_warmup`, `get_wsd_schedule`)."""
    if opt.lr_scheduler_type == "cosine_with_min_lr":
        return {"min_lr_rate": opt.min_lr_rate}
    if opt.lr_scheduler_type == "warmup_stable_decay":
        # the stable phase is what warm-up and decay leave of `num_training_steps` (the Trainer passes max_steps)
        return {
            "num_decay_steps": opt.wsd_decay_steps(max_steps),
            "decay_type": opt.decay_type,
            "min_lr_ratio": opt.min_lr_rate,
        }
    return {}


def build_training_arguments(config: RunConfig):
    opt = config.optimizer
    return training_arguments(
        **common_training_arguments(config),
        **optimizer_arguments(opt),
        max_steps=config.train.max_steps,
        adam_epsilon=opt.eps,
        warmup_steps=opt.warmup_steps,
        lr_scheduler_kwargs=scheduler_kwargs(opt, config.train.max_steps),
        full_determinism=config.train.deterministic,
        dataloader_num_workers=config.data.num_workers,
        disable_tqdm=False,
    )


def build_scheduler(config: RunConfig, sources: list[DataSource], tokenizer, args) -> OnlineDataScheduler:
    return OnlineDataScheduler(
        sources,
        tokenizer,
        seq_len=config.data.seq_len,
        seed=config.train.seed,
        batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        block_size=config.data.block_size,
        stratified=config.data.stratified,
        schedule=config.data.schedule.model_dump() if config.data.schedule is not None else None,
        share_tolerance=config.data.share_tolerance,
        min_segment_tokens=config.data.min_segment_tokens,
        prefetch_blocks=config.data.prefetch_blocks,
        buffer_tokens=config.data.buffer_tokens,
    )


def build_monitors(monitors_config: Any) -> list[TrainerCallback]:
    """The paper's monitors from a `monitors` section, each optional (`monitors.<name>: null` turns one off)."""
    wanted = {name: options for name, options in monitors_config.model_dump().items() if options is not None}
    if not wanted:
        return []
    from .. import callbacks as monitors

    classes = {
        "stability": monitors.StabilityMonitor,
        "throughput": monitors.ThroughputMonitor,
        "spike_guard": monitors.SpikeGuard,
    }
    return [classes[name](**options) for name, options in wanted.items()]


@dataclass
class PreparedRun:
    config: RunConfig
    trainer: Trainer
    scheduler: OnlineDataScheduler
    tokenizer: PreTrainedTokenizerFast
    resume_from: str | None
    resume_notice: str = ""
    """one line: fresh, or from which checkpoint, and which newer ones were skipped and why"""


def build_trainer(config: RunConfig) -> PreparedRun:
    """Everything checked (launch, config, files) before the tokenizer trains or the model is allocated."""
    config.check_files()
    check_launch(config)
    args = build_training_arguments(config)
    sources = build_sources(config)
    if is_main_process():
        config.run_dir.mkdir(parents=True, exist_ok=True)
        dump_run_config(config, config.run_dir / "run_config.yaml")
    tokenizer = build_tokenizer(config, sources)
    set_seed(config.train.seed)  # the same initial weights on every rank and in every rerun
    model = build_model(config, tokenizer)
    scheduler = build_scheduler(config, sources, tokenizer, args)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=scheduler,
        data_collator=PackedWindowCollator(),
        processing_class=tokenizer,
    )
    plan = resume_plan(config.run_dir, config.resume)
    resume_from = str(plan.checkpoint) if plan.checkpoint else None
    feedback = Exp3Feedback(**config.data.feedback.model_dump()) if config.data.feedback is not None else None
    attach(
        trainer,
        scheduler,
        mixture_file=config.data.mixture_file,
        mixture_every_n_steps=config.data.mixture_every_n_steps,
        feedback=feedback,
        resume_from=resume_from,
    )
    monitors = build_monitors(config.monitors)
    if monitors:
        from ..callbacks import add_monitors

        add_monitors(trainer, *monitors)  # ahead of the reporters, so TensorBoard & co. see their metrics
    use_console(trainer)  # one short line per log event instead of the whole metrics dict
    ensure_completion_marking(trainer)  # last: after every other callback's on_save
    return PreparedRun(config, trainer, scheduler, tokenizer, resume_from, plan.notice)


def run(prepared: PreparedRun) -> Path:
    """Train (resuming if a complete checkpoint exists), report the data, save the final model and tokenizer."""
    trainer = prepared.trainer
    if is_main_process() and prepared.resume_notice:
        logger.info(prepared.resume_notice)
    with quiet_progress_bars():  # checkpoint saves would draw a "Writing model shards" bar each
        trainer.train(resume_from_checkpoint=prepared.resume_from)
    report_data(prepared)
    final = prepared.config.run_dir / "final"
    if any(getattr(cb, "needs_resume", False) for cb in trainer.callback_handler.callbacks):
        # SpikeGuard stopped a run it could not repair in process (DeepSpeed applies updates before callbacks):
        # the weights may be damaged, so no final model; the newest complete checkpoint is the way back.
        logger.error("Training stopped by SpikeGuard; rerun the same command to resume from the last good checkpoint.")
        return final
    with quiet_progress_bars():
        trainer.save_model(str(final))  # model + tokenizer (processing_class), on the main process only
    average_last = getattr(prepared.config.train, "average_last", None)
    if average_last and is_main_process():
        from .averaging import average_checkpoints

        report = average_checkpoints(prepared.config.run_dir, average_last, prepared.config.run_dir / "final-averaged")
        logger.info("Averaged checkpoints at steps %s into %s (%.1f s)", report.steps, report.output, report.seconds)
    barrier()
    return final


@contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """transformers' own progress bars (saving and loading weights) off; the Trainer's training bar stays."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def report_data(prepared: PreparedRun) -> Path | None:
    """Per source: tokens, documents, skips by reason over all ranks; printed and written to `<run>/data_report.json`."""
    report = data_report(prepared.scheduler)  # a collective: every rank takes part
    if not is_main_process():
        return None
    path = write_data_report(report, prepared.config.run_dir / "data_report.json")
    print(f"\n{format_data_report(report)}\n(written to {path})", flush=True)
    return path


def print_next_steps(final: Path, config: RunConfig) -> None:
    """The hint shown after a run (CLI output, hence print)."""
    if not is_main_process():
        return
    print(
        f"\nDone. Model and tokenizer: {final}\n"
        f"  python -c \"import wonton_hf; from transformers import AutoModelForCausalLM as M; M.from_pretrained('{final}')\"\n"
        f"  tensorboard --logdir {config.run_dir / 'runs'}\n"
        f"  wonton-hf plot-run {config.run_dir}\n"
        f"  accelerate launch examples/sft.py --model {final}\n"
        f"  wonton-hf eval {final} --suite multilingual --data-dir DIR\n",
        file=sys.stdout,
    )
