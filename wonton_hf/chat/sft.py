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
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    set_seed,
)

from ..data.sources import SkipCounter
from ..training.checkpoints import barrier
from ..training.config import MonitorsConfig, apply_overrides, build_dataclass
from ..training.launch import build_monitors, device_arguments, is_main_process, world_size
from ..training.launch import check_launch as _check_launch
from .formats import ChatDataReport, build_chat_dataset, load_chat_sources, source_conversations
from .template import install_chat_template

logger = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
DEMO_DATA_DIR = Path(__file__).resolve().parent.parent / "demo" / "data"
PRETRAIN_DEMO_OUTPUT = "outputs/pretrain-demo/final"
"""Where `accelerate launch examples/pretrain.py` (the embedded pretraining demo) saves its model."""
PATH_VARIABLES = {"{samples}": str(SAMPLES_DIR)}


@dataclass
class SFTModelConfig:
    path: str = "auto"
    """a save_pretrained directory (or hub id); auto: the pretraining demo's output if present, else a tiny model
    and tokenizer made on the spot (a pipeline demo, not a chat model worth talking to)"""
    tiny_preset: str = "wonton-tiny"
    """preset of the on-the-spot model"""
    tiny_vocab_size: int = 2048
    """tokenizer size of the on-the-spot model (trained on the package's demo texts and chat samples)"""
    tiny_overrides: dict[str, Any] = field(default_factory=dict)
    """`WontonConfig` fields changed on top of `tiny_preset` (e.g. hidden_size, num_hidden_layers)"""
    attn_implementation: str | None = None
    """None: sdpa (its block-diagonal mask from position ids keeps packed conversations apart)"""
    trust_remote_code: bool = False


@dataclass
class SFTDataConfig:
    sources: list[dict[str, Any]] = field(default_factory=list)
    """`ChatSource` fields per source: name, format, path, weight, split, languages, subsets, max_records"""
    max_length: int = 2048
    """tokens per packed row (without packing: longer conversations are truncated)"""
    packing: bool = True
    """best-fit-decreasing packing, padding-free; conversations longer than max_length are truncated"""
    num_proc: int | None = None
    """processes for TRL's tokenisation (`dataset_num_proc`)"""


@dataclass
class SFTTrainConfig:
    epochs: float = 3.0
    """paper: 1-3"""
    max_steps: int = -1
    """> 0 overrides epochs"""
    learning_rate: float = 2e-5
    global_batch_size: int = 512
    """rows per optimizer step over all ranks (packed rows with packing, conversations without)"""
    per_device_batch_size: int = 4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    """the pretraining optimizer's (the report: "same optimizer")"""
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    precision: str = "auto"
    """auto (bf16 on CUDA with bf16 support, else fp32) | bf16 | fp16 | fp32"""
    gradient_checkpointing: bool = False
    deepspeed: str | None = None
    """a DeepSpeed JSON, shared with pretraining: examples/configs/deepspeed/zero2.json"""
    use_cpu: bool | None = None
    """None: CPU when no CUDA device is present"""
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    seed: int = 42
    assistant_only_loss: bool = True
    """loss on answers (and their </s>) only, as in the report; False trains on every token"""


@dataclass
class SFTRunConfig:
    run_name: str = "sft"
    output_dir: str = "outputs"
    model: SFTModelConfig = field(default_factory=SFTModelConfig)
    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    train: SFTTrainConfig = field(default_factory=SFTTrainConfig)
    monitors: MonitorsConfig = field(default_factory=MonitorsConfig)
    """the pretraining monitors (wonton_hf.callbacks); `monitors.<name>: null` turns one off"""

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name

    def gradient_accumulation_steps(self, world_size: int) -> int:
        per_pass = self.train.per_device_batch_size * world_size
        steps = self.train.global_batch_size / per_pass
        if steps < 1 or not math.isclose(steps, round(steps)):
            raise ValueError(
                f"`train.global_batch_size` ({self.train.global_batch_size}) must be a positive multiple of "
                f"train.per_device_batch_size x world size = {self.train.per_device_batch_size} x {world_size}; "
                "change one of them."
            )
        return int(round(steps))

    def validate(self) -> None:
        """Every check that needs no model, tokenizer or data."""
        if not self.data.sources:
            raise ValueError("`data.sources` is empty: list at least one chat source (name, format, path).")
        for source in load_chat_sources([_expanded(s) for s in self.data.sources]):
            source.validate()  # unknown keys and formats fail here; missing files when the data is read
        for name, value in {"data.max_length": self.data.max_length, "train.learning_rate": self.train.learning_rate,
                            "train.per_device_batch_size": self.train.per_device_batch_size,
                            "train.global_batch_size": self.train.global_batch_size, "train.epochs": self.train.epochs,
                            "train.logging_steps": self.train.logging_steps, "train.save_steps": self.train.save_steps}.items():
            if not value > 0:
                raise ValueError(f"`{name}` must be positive, got {value}.")
        if self.train.precision not in {"auto", "bf16", "fp16", "fp32"}:
            raise ValueError(f"`train.precision` must be auto, bf16, fp16 or fp32, got {self.train.precision!r}.")
        if self.train.deepspeed is not None and not Path(self.train.deepspeed).is_file():
            raise ValueError(f"`train.deepspeed` file {self.train.deepspeed} does not exist.")


def _expanded(spec: dict[str, Any]) -> dict[str, Any]:
    def expand(path: str) -> str:
        for name, value in PATH_VARIABLES.items():
            path = path.replace(name, value)
        return path

    path = spec.get("path")
    if isinstance(path, str):
        return {**spec, "path": expand(path)}
    if isinstance(path, list):
        return {**spec, "path": [expand(p) for p in path]}
    return dict(spec)


def load_sft_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> SFTRunConfig:
    """Read an SFT YAML, apply `section.key=value` overrides, validate (before any model or data is touched)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SFT config {path} does not exist.")
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of sections (model, data, train, monitors).")
    config = build_dataclass(SFTRunConfig, apply_overrides(values, overrides or []))
    config.validate()
    return config


# ---- launch, model, data ----


def check_launch(config: SFTRunConfig) -> None:
    """The launch traps of ENVIRONMENT_NOTES.md, refused up front (shared with pretraining)."""
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
        remote = config.model.trust_remote_code
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
    samples = load_chat_sources([
        {"name": p.stem, "format": p.stem, "path": str(p)}  # each sample file is named after its format
        for p in sorted(SAMPLES_DIR.glob("*.json*"))
    ])
    for source in samples:
        for messages in source_conversations(source, SkipCounter(source.name)):
            texts += [m["content"] for m in messages]
    return texts


def make_tiny_model(config: SFTRunConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A tokenizer trained on `demo_texts` (once, by the main process) and a fresh Wonton model sized to it."""
    from ..models.wonton import WontonConfig, WontonForCausalLM
    from ..tokenization import save_tokenizer, train_tokenizer

    target = config.run_dir / "tiny-base-tokenizer"
    if is_main_process() and not (target / "tokenizer.json").is_file():
        save_tokenizer(train_tokenizer(texts=demo_texts(), vocab_size=config.model.tiny_vocab_size).tokenizer, target)
    barrier()
    tokenizer = AutoTokenizer.from_pretrained(target)
    set_seed(config.train.seed)
    preset = WontonConfig.from_preset(config.model.tiny_preset)
    model_config = WontonConfig.from_preset(
        config.model.tiny_preset,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(preset.max_position_embeddings, config.data.max_length),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **config.model.tiny_overrides,
    )
    model_config._attn_implementation = config.model.attn_implementation or "sdpa"
    return WontonForCausalLM(model_config), tokenizer


def load_chat_data(config: SFTRunConfig) -> tuple[Any, ChatDataReport]:
    """All configured sources as one `datasets.Dataset` of `messages`, plus the kept/sampled/skipped counts."""
    return build_chat_dataset(load_chat_sources([_expanded(s) for s in config.data.sources]), seed=config.train.seed)


# ---- trainer ----


def build_sft_config(config: SFTRunConfig):
    """TRL's `SFTConfig` with the paper's choices; every TRL default we do not want is set explicitly."""
    from trl import SFTConfig

    train = config.train
    return SFTConfig(
        output_dir=str(config.run_dir),
        run_name=config.run_name,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps(world_size()),
        learning_rate=train.learning_rate,
        adam_beta1=train.betas[0],
        adam_beta2=train.betas[1],
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        warmup_steps=train.warmup_ratio,  # transformers 5: a float < 1 is a fraction of the training steps
        lr_scheduler_type=train.lr_scheduler_type,
        gradient_checkpointing=train.gradient_checkpointing,  # TRL's default is True: ~20% slower, rarely needed
        deepspeed=train.deepspeed,
        logging_steps=train.logging_steps,
        save_steps=train.save_steps,
        save_total_limit=train.save_total_limit,
        report_to=train.report_to,
        seed=train.seed,
        data_seed=train.seed,
        max_length=config.data.max_length,
        packing=config.data.packing,
        packing_strategy="bfd",
        assistant_only_loss=train.assistant_only_loss,
        dataset_num_proc=config.data.num_proc,
        **device_arguments(train),  # use_cpu, precision, and the DeepSpeed-on-CPU state as in pretraining
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

    from ..callbacks import add_monitors

    check_launch(config)
    args = build_sft_config(config)
    dataset, report = load_chat_data(config)  # bad files fail here, before the model is built
    model, tokenizer, origin = load_model_and_tokenizer(config)
    logger.info("SFT of %s on %d conversations (%s)", origin, len(dataset), report.summary())
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=callbacks)
    add_monitors(trainer, *build_monitors(config.monitors))
    return PreparedSFT(config, trainer, tokenizer, report, origin)


def run_sft(prepared: PreparedSFT, resume_from: str | bool | None = None) -> Path:
    """Train, then save model + tokenizer (with the chat template) to `<run_dir>/final`."""
    trainer = prepared.trainer
    trainer.train(resume_from_checkpoint=resume_from)
    final = prepared.config.run_dir / "final"
    trainer.save_model(str(final))
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
    "build_monitors",
    "build_sft_config",
    "build_sft_trainer",
    "check_launch",
    "load_model_and_tokenizer",
    "load_sft_config",
    "make_tiny_model",
    "resolve_model_path",
    "run_sft",
]
