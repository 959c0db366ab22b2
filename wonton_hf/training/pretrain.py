"""Pretraining from a `RunConfig`: sources, tokenizer, model, data scheduler and arguments into a ready
`transformers.Trainer`, then the run itself and its report.

`examples/pretrain.py` is a thin wrapper around `build_trainer` + `run`. The training loop is the HF
Trainer's own; this module only decides what the paper decides (optimizer, schedule, batch in tokens,
precision). What SFT shares with it lives in modules of their own, which both import: the launch checks
(`launch_checks`), devices and DeepSpeed on CPU (`devices`), the `TrainingArguments` mapping (`arguments`),
the callbacks every run gets (`run_callbacks`) and the fresh model (`model_init`).
"""

from __future__ import annotations

import logging
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
    set_seed,
)

from ..checkpointing.preemption import exit_if_preempted
from ..checkpointing.resume import shared_resume_plan
from ..data import DataSource, OnlineDataScheduler, PackedWindowCollator, attach, load_sources, training_arguments
from ..data.callbacks import data_report, format_data_report, write_data_report
from ..data.callbacks.held_out import EvalWindowDataset, HeldOutEvaluation
from ..data.heldout import build_eval_windows
from ..data.mixture import Exp3Feedback
from ..data.settings import SchedulerSettings
from ..distributed import barrier, is_main_process
from ..distributed import shutdown as shutdown
from ..models.wonton import WontonForCausalLM
from .arguments import common_training_arguments, optimizer_arguments, scheduler_kwargs
from .compilation import compile_decoder_layers
from .config import RunConfig, dump_run_config
from .console import quiet_progress_bars
from .elastic import prepare_world_size_change
from .float8 import Float8Trainer, check_float8
from .fsdp import prepare_fsdp, save_full_model
from .launch_checks import check_launch
from .model_init import fresh_wonton_model
from .run_callbacks import install_run_callbacks

logger = logging.getLogger(__name__)

PATH_VARIABLES = {
    "{stdlib}": sysconfig.get_paths()["stdlib"],
    "{package_data}": str(Path(__file__).resolve().parent.parent / "demo" / "data"),
}
"""Placeholders allowed in source paths: the running interpreter's standard library (a ready code corpus) and
the multilingual samples shipped with the package."""


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
    return fresh_wonton_model(
        config.model.preset,
        tokenizer,
        max_length=config.data.seq_len,
        attn_implementation=attn,
        overrides=config.model.overrides,
    )


def evaluation_arguments(config: RunConfig) -> dict:
    """The Trainer's own evaluation schedule when the run config has an `evaluation` section."""
    evaluation = config.evaluation
    if evaluation is None:
        return {}
    return dict(
        eval_strategy="steps",
        eval_steps=evaluation.eval_steps,
        per_device_eval_batch_size=evaluation.batch_size or config.train.per_device_batch_size,
    )


def build_training_arguments(config: RunConfig):
    opt = config.optimizer
    return training_arguments(
        **evaluation_arguments(config),
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


def scheduler_settings(config: RunConfig, args: TrainingArguments) -> SchedulerSettings:
    """The run config's data settings, with the batching the Trainer was given (the scheduler's workers must agree)."""
    data = config.data
    return SchedulerSettings(
        seq_len=data.seq_len,
        seed=config.train.seed,
        batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        block_size=data.block_size,
        stratified=data.stratified,
        share_tolerance=data.share_tolerance,
        min_segment_tokens=data.min_segment_tokens,
        prefetch_blocks=data.prefetch_blocks,
        buffer_tokens=data.buffer_tokens,
        held_out_share=(config.evaluation.held_out_share or 0.0) if config.evaluation is not None else 0.0,
    )


def packed_collator(config: RunConfig) -> PackedWindowCollator:
    """Flash attention needs the documents' boundaries as `cu_seq_lens`: from `position_ids` alone transformers
    finds them only in a batch of one row, and runs plain causal attention across the documents of larger ones."""
    return PackedWindowCollator(return_flash_attn_kwargs=config.model.attn_implementation == "flash_attention_2")


def build_scheduler(config: RunConfig, sources: list[DataSource], tokenizer, args) -> OnlineDataScheduler:
    schedule = config.data.schedule.model_dump() if config.data.schedule is not None else None
    return OnlineDataScheduler(sources, tokenizer, settings=scheduler_settings(config, args), schedule=schedule)


def build_eval_dataset(config: RunConfig, scheduler: OnlineDataScheduler) -> EvalWindowDataset | None:
    """The fixed evaluation windows: each chosen source's held-out documents, then the explicit evaluation sources.

    Built the same on every rank (a deterministic read of the files in sorted order); the Trainer's eval
    DataLoader then gives each rank its part.
    """
    evaluation = config.evaluation
    if evaluation is None:
        return None
    sets = []
    share = evaluation.held_out_share
    if share is not None:
        wanted = set(evaluation.sources or scheduler.names)
        for index, source in enumerate(scheduler.sources):
            if source.name in wanted:
                sets.append(
                    build_eval_windows(
                        source,
                        scheduler.backend,
                        scheduler.settings,
                        num_windows=evaluation.windows_per_source,
                        share=share,
                        source_index=index,
                    )
                )
    extras = [{**e.model_dump(), "paths": [expand_path(p) for p in e.paths]} for e in evaluation.extra_sources]
    for index, source in enumerate(load_sources(extras) if extras else [], start=len(scheduler.sources)):
        sets.append(
            build_eval_windows(
                source,
                scheduler.backend,
                scheduler.settings,
                num_windows=evaluation.windows_per_source,
                share=None,
                source_index=index,
            )
        )
    for s in sets:
        if not s.windows:
            logger.warning(
                "evaluation: source %s has no held-out document at held_out_share=%s; it is not evaluated",
                s.name,
                share,
            )
    dataset = EvalWindowDataset(sets)
    if not len(dataset):
        raise ValueError(
            f"evaluation: no source has a held-out document at held_out_share={share}; raise the share or give "
            "evaluation.extra_sources."
        )
    if is_main_process():
        logger.info(
            "evaluation: %d windows of %d tokens every %d steps: %s",
            len(dataset),
            config.data.seq_len,
            evaluation.eval_steps,
            ", ".join(f"{s.name} {len(s.windows)} ({s.documents} docs)" for s in dataset.sets),
        )
    return dataset


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
    check_float8(config)
    args = build_training_arguments(config)
    sources = build_sources(config)
    if is_main_process():
        config.run_dir.mkdir(parents=True, exist_ok=True)
        dump_run_config(config, config.run_dir / "run_config.yaml")
    tokenizer = build_tokenizer(config, sources)
    set_seed(config.train.seed)  # the same initial weights on every rank and in every rerun
    model = build_model(config, tokenizer)
    if config.train.compile is not None:  # per decoder layer, in place (see `compilation` for why not the Trainer's)
        compile_decoder_layers(model, **config.train.compile.model_dump())
    scheduler = build_scheduler(config, sources, tokenizer, args)
    eval_dataset = build_eval_dataset(config, scheduler)
    float8 = config.train.float8
    trainer_class, extra = (Trainer, {}) if float8 is None else (Float8Trainer, {"float8_recipe": float8.recipe})
    trainer = trainer_class(
        **extra,
        model=model,
        args=args,
        train_dataset=scheduler,
        eval_dataset=eval_dataset,
        data_collator=packed_collator(config),
        processing_class=tokenizer,
    )
    plan = shared_resume_plan(config.run_dir, config.resume)
    resume_from = str(plan.checkpoint) if plan.checkpoint else None
    feedback = Exp3Feedback(**config.data.feedback.model_dump()) if config.data.feedback is not None else None
    held_out = HeldOutEvaluation(eval_dataset) if eval_dataset is not None else None
    attach(
        trainer,
        scheduler,
        mixture_file=config.data.mixture_file,
        mixture_every_n_steps=config.data.mixture_every_n_steps,
        feedback=feedback,
        resume_from=resume_from,
        held_out=held_out if config.evaluation is not None and config.evaluation.feedback_from_held_out else None,
    )
    if held_out is not None:  # right after the tracker: its metrics reach TensorBoard & co. in the same log event
        trainer.callback_handler.callbacks.insert(1, held_out)
    install_run_callbacks(trainer, config.monitors, config.train)  # monitors, console; the completion marker last
    prepare_fsdp(trainer, config.train.fsdp)  # FSDP2's mixed-precision policy (train.fsdp); nothing without it
    if config.downstream is not None and config.downstream.enabled:
        from ..callbacks import add_monitors  # ahead of the reporters, like the monitors: its scores join the log
        from ..evaluation.downstream import DownstreamEvaluation

        add_monitors(trainer, DownstreamEvaluation(**config.downstream.model_dump()))
    elastic = prepare_world_size_change(trainer, resume_from)  # DeepSpeed shards re-sliced for another world size
    notice = f"{plan.notice} {elastic}" if elastic else plan.notice
    return PreparedRun(config, trainer, scheduler, tokenizer, resume_from, notice)


def run(prepared: PreparedRun) -> Path:
    """Train (resuming if a complete checkpoint exists), report the data, save the final model and tokenizer."""
    trainer = prepared.trainer
    if is_main_process() and prepared.resume_notice:
        logger.info(prepared.resume_notice)
    with quiet_progress_bars():  # checkpoint saves would draw a "Writing model shards" bar each
        trainer.train(resume_from_checkpoint=prepared.resume_from)
    exit_if_preempted(trainer, prepared.config.run_dir)
    report_data(prepared)
    final = prepared.config.run_dir / "final"
    if any(getattr(cb, "needs_resume", False) for cb in trainer.callback_handler.callbacks):
        # SpikeGuard stopped a run it could not repair in process (DeepSpeed applies updates before callbacks):
        # the weights may be damaged, so no final model; the newest complete checkpoint is the way back.
        logger.error("Training stopped by SpikeGuard; rerun the same command to resume from the last good checkpoint.")
        return final
    with quiet_progress_bars():
        save_full_model(trainer, str(final))  # model + tokenizer, written by the main process (gathered under FSDP)
    average_last = getattr(prepared.config.train, "average_last", None)
    if average_last and is_main_process():
        from .averaging import average_checkpoints

        report = average_checkpoints(prepared.config.run_dir, average_last, prepared.config.run_dir / "final-averaged")
        logger.info("Averaged checkpoints at steps %s into %s (%.1f s)", report.steps, report.output, report.seconds)
    barrier()
    return final


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
