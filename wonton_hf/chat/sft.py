"""Supervised fine-tuning into the chat model (report section 4) on TRL's `SFTTrainer`.

`examples/sft.py` is a thin wrapper around `build_sft_trainer` + `run_sft`. TRL does the work: it renders
each conversation with the `[INST]` template, builds labels from the template's `{% generation %}` spans
(`assistant_only_loss=True`: answer tokens and their `</s>` only), packs conversations best-fit-decreasing
into `max_length` rows and trains padding-free (position ids restart per conversation; the Wonton model
never attends across them). No trainer subclass: nothing here needs one.

What this module decides, as the paper does: full fine-tune, LR 2e-5, global batch 512 rows (gradient
accumulation derived from the world size), 1-3 epochs, AdamW beta 0.9/0.95 with the pretraining weight decay,
clipping 1.0; bf16 only where the hardware has it (TRL's default is bf16 everywhere, which CPUs without
bf16 kernels run slowly or not at all).

Packing and attention: TRL's packing is padding-free, so a micro-batch of `per_device_batch_size` packed rows
reaches the model as ONE row of up to per_device x max_length tokens with restarting position ids. Varlen
flash attention computes each conversation separately; sdpa and eager build a dense block-diagonal mask and
compute the whole square, so with them `per_device_batch_size` should stay small (1-2) and accumulation
larger (benchmarks/sft_packing.py measured 0.74x tokens/s at 8 rows per micro-batch, 1.16x at 2, 1.42x at 1,
against the same run unpacked, on CPU).

Known difference from pretraining: TRL scores the loss with its own chunked LM head (`add_fused_lm_head`),
which computes log-probs only, so the model's z-loss / max-z-loss terms are not added during SFT. They guard
against logit drift over long high-LR pretraining; at LR 2e-5 for a few epochs the report gives no reason
to keep them, and re-adding them would mean overriding `compute_loss`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    set_seed,
)

from ..checkpointing.preemption import exit_if_preempted
from ..checkpointing.resume import shared_resume_plan
from ..data.sources import SkipCounter
from ..distributed import barrier, is_main_process
from ..training.arguments import common_training_arguments, optimizer_arguments
from ..training.console import quiet_progress_bars
from ..training.fsdp import prepare_fsdp, save_full_model
from ..training.launch_checks import check_launch as _check_launch
from ..training.run_callbacks import install_run_callbacks
from .config import (
    DEMO_DATA_DIR,
    PRETRAIN_DEMO_OUTPUT,
    SAMPLES_DIR,
    SFTRunConfig,
    expand_path_variables,
    load_sft_config,
    sft_config_help,
)
from .formats import ChatDataReport, build_chat_dataset, load_chat_sources, source_conversations
from .template import install_chat_template

logger = logging.getLogger(__name__)


# ---- launch, model, data ----


def check_launch(config: SFTRunConfig) -> None:
    """Launches that would train duplicate or unsharded copies, refused up front (shared with pretraining)."""
    _check_launch(config, script="examples/sft.py")


def resolve_model_path(config: SFTRunConfig) -> str | None:
    """`model.path: auto` -> the pretraining demo's output if it exists, else None (a tiny model on the spot)."""
    if config.model.path != "auto":
        return config.model.path
    return PRETRAIN_DEMO_OUTPUT if (Path(PRETRAIN_DEMO_OUTPUT) / "config.json").is_file() else None


def load_model_and_tokenizer(config: SFTRunConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """The base model and its tokenizer, with the chat template installed (embeddings grown if tokens were added)."""
    path = resolve_model_path(config)
    if path is None:
        model, tokenizer = make_tiny_model(config)
        origin = f"a tiny {config.model.tiny_preset} model made on the spot (no pretrained base found)"
    else:
        from ..remote_code import check_remote_code

        remote = config.model.trust_remote_code
        check_remote_code(path, remote, flag="model.trust_remote_code=true")
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote)
        model = AutoModelForCausalLM.from_pretrained(
            path, attn_implementation=config.model.attn_implementation or "sdpa", trust_remote_code=remote
        )
        origin = path
    install_chat_template(tokenizer, model)
    return model, tokenizer, origin


def demo_texts() -> list[str]:
    """Text for the on-the-spot tokenizer: the pretraining demo samples and the chat samples' messages."""
    texts: list[str] = []
    for path in sorted(DEMO_DATA_DIR.glob("*.jsonl")):
        texts += [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    samples = load_chat_sources(
        [
            {"name": p.stem, "format": p.stem, "path": str(p)}  # each sample file is named after its format
            for p in sorted(SAMPLES_DIR.glob("*.json*"))
        ]
    )
    for source in samples:
        for messages in source_conversations(source, SkipCounter(source.name)):
            texts += [m["content"] for m in messages]
    return texts


def make_tiny_model(config: SFTRunConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A tokenizer trained on `demo_texts` (once, by the main process) and a fresh Wonton model sized to it."""
    from ..tokenization import save_tokenizer, train_tokenizer
    from ..training.model_init import fresh_wonton_model

    target = config.run_dir / "tiny-base-tokenizer"
    if is_main_process() and not (target / "tokenizer.json").is_file():
        save_tokenizer(train_tokenizer(texts=demo_texts(), vocab_size=config.model.tiny_vocab_size).tokenizer, target)
    barrier()
    tokenizer = AutoTokenizer.from_pretrained(target)
    set_seed(config.train.seed)
    model = fresh_wonton_model(
        config.model.tiny_preset,
        tokenizer,
        max_length=config.data.max_length,
        attn_implementation=config.model.attn_implementation or "sdpa",
        overrides=config.model.tiny_overrides,
    )
    return model, tokenizer


def load_chat_data(config: SFTRunConfig) -> tuple[Any, ChatDataReport]:
    """All configured sources as one `datasets.Dataset` of `messages`, plus the kept/sampled/skipped counts."""
    return build_chat_dataset(
        load_chat_sources([expand_path_variables(s.model_dump()) for s in config.data.sources]), seed=config.train.seed
    )


# ---- trainer ----


def build_sft_config(config: SFTRunConfig):
    """TRL's `SFTConfig` with the paper's choices; every TRL default we do not want is set explicitly."""
    from trl import SFTConfig

    train = config.train
    return SFTConfig(
        **common_training_arguments(config),  # the same mapping as pretraining (device, precision, logging...)
        **optimizer_arguments(train),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        warmup_steps=train.warmup_ratio,  # transformers 5: a float < 1 is a fraction of the training steps
        # TRL turns gradient checkpointing on by default (~20% slower, rarely needed here): the config decides.
        max_length=config.data.max_length,
        packing=config.data.packing,
        packing_strategy="bfd",
        assistant_only_loss=train.assistant_only_loss,
        dataset_num_proc=config.data.num_proc,
    )


@dataclass
class PreparedSFT:
    config: SFTRunConfig
    trainer: Any
    tokenizer: PreTrainedTokenizerBase
    data_report: ChatDataReport
    model_origin: str


def build_sft_trainer(config: SFTRunConfig, callbacks: list[TrainerCallback] | None = None) -> PreparedSFT:
    """Checks, data, model, `SFTTrainer` with the monitors attached; `callbacks` are added after them."""
    from trl import SFTTrainer

    check_launch(config)
    args = build_sft_config(config)
    dataset, report = load_chat_data(config)  # bad files fail here, before the model is built
    model, tokenizer, origin = load_model_and_tokenizer(config)
    logger.info("SFT of %s on %d conversations (%s)", origin, len(dataset), report.summary())
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks)
    install_run_callbacks(trainer, config.monitors, config.train)  # monitors, console; the completion marker last
    prepare_fsdp(trainer, config.train.fsdp)  # FSDP2's mixed-precision policy (train.fsdp); nothing without it
    return PreparedSFT(config, trainer, tokenizer, report, origin)


def run_sft(prepared: PreparedSFT, resume_from: str | None = None) -> Path:
    """Train (from `resume_from`, else as the config's `resume` says), then save model + tokenizer (with the chat
    template) to `<run_dir>/final`."""
    trainer = prepared.trainer
    if resume_from is None:
        plan = shared_resume_plan(prepared.config.run_dir, prepared.config.resume)
        resume_from = str(plan.checkpoint) if plan.checkpoint else None
        if is_main_process():
            logger.info(plan.notice)
    with quiet_progress_bars():
        trainer.train(resume_from_checkpoint=resume_from)
    exit_if_preempted(trainer, prepared.config.run_dir)
    final = prepared.config.run_dir / "final"
    with quiet_progress_bars():
        save_full_model(trainer, str(final))  # gathered from the shards under FSDP
    if trainer.is_world_process_zero():
        (final / "sft_data_report.json").write_text(json.dumps(dataclasses.asdict(prepared.data_report), indent=2))
    return final


# ---- measurements ----


@dataclass
class BatchEfficiency:
    """How much of what the model computes is real text, and how much of that carries loss."""

    rows: int
    tokens: int
    """real (non-padding) tokens"""
    slots: int
    """tokens the model computes: padded batch shape, or the flattened length for padding-free batches"""
    loss_tokens: int
    capacity: int
    """rows x max_length: what packed rows could hold"""

    @property
    def padding_efficiency(self) -> float:
        return self.tokens / max(self.slots, 1)

    @property
    def fill(self) -> float:
        return self.tokens / max(self.capacity, 1)

    @property
    def loss_fraction(self) -> float:
        return self.loss_tokens / max(self.tokens, 1)


def batch_efficiency(trainer: Any, max_batches: int | None = None) -> BatchEfficiency:
    """Walk the trainer's own DataLoader (the batches it trains on) and count real, padded and loss tokens."""
    totals = dict(rows=0, tokens=0, slots=0, loss_tokens=0, capacity=0)
    max_length, per_device = trainer.args.max_length, trainer.args.per_device_train_batch_size
    remaining = len(trainer.train_dataset)
    for i, batch in enumerate(trainer.get_train_dataloader()):
        if max_batches is not None and i >= max_batches:
            break
        if "attention_mask" in batch:
            tokens, rows = int(batch["attention_mask"].sum()), batch["input_ids"].shape[0]
        else:  # padding-free: the batch's rows flattened into one, no padding at all
            tokens, rows = batch["input_ids"].numel(), min(per_device, remaining)
        remaining -= rows
        totals["rows"] += rows
        totals["tokens"] += tokens
        totals["slots"] += batch["input_ids"].numel()
        totals["loss_tokens"] += int((batch["labels"] != -100).sum())
        totals["capacity"] += rows * max_length
    return BatchEfficiency(**totals)


__all__ = [
    "BatchEfficiency",
    "PRETRAIN_DEMO_OUTPUT",
    "PreparedSFT",
    "SFTRunConfig",
    "batch_efficiency",
    "build_sft_config",
    "build_sft_trainer",
    "check_launch",
    "load_model_and_tokenizer",
    "load_sft_config",
    "make_tiny_model",
    "resolve_model_path",
    "run_sft",
    "sft_config_help",
]
