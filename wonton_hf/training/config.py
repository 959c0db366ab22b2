"""One run = one YAML file: model, tokenizer, data mixture, batch, optimizer, schedule, monitors, output.

The file maps onto the dataclasses below (unknown keys are errors that name the key and the section), and
`key.sub=value` overrides from the command line are applied before validation, so a bad value fails before
any model, tokenizer or data is touched. Everything the Trainer needs is derived here (gradient
accumulation from the token batch and the world size, precision from the hardware), in one place a reader
can check against the paper's section 2.5.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ModelConfig:
    preset: str = "wonton-tiny"
    """a `WONTON_PRESETS` name (wonton-tiny, wonton-125m, wonton-1b, wonton-7b, ...)"""
    overrides: dict[str, Any] = field(default_factory=dict)
    """`WontonConfig` fields to change on top of the preset (vocab_size follows the tokenizer automatically)"""
    init_from: str | None = None
    """continue from a `save_pretrained` directory instead of a fresh initialisation"""
    attn_implementation: str | None = None
    """eager | sdpa | flex_attention | flash_attention_2; None: sdpa (flex on CUDA would also keep documents apart)"""


@dataclass
class TokenizerConfig:
    path: str | None = None
    """a tokenizer directory (`AutoTokenizer`); None: train one from the data sources at start-up"""
    vocab_size: int = 8192
    """size of the tokenizer trained at start-up (rounded up to a multiple of 128)"""
    max_documents_per_source: int = 2000
    """documents read from each source to train it (keeps start-up short)"""


@dataclass
class DataConfig:
    sources: list[dict[str, Any]] = field(default_factory=list)
    """`DataSource` fields per source (name, paths, format, text_field, language, weight, on_exhausted, ...)"""
    seq_len: int = 2048
    """tokens per packed window"""
    stratified: bool = False
    """each batch matches the weights up to one document"""
    schedule: dict[str, Any] | None = None
    """a `WeightSchedule` dict (weights over steps or tokens; piecewise constant or linear)"""
    mixture_file: str | None = None
    """YAML/JSON weights re-read every `mixture_every_n_steps` (live edits without restart)"""
    mixture_every_n_steps: int = 50
    feedback: dict[str, Any] | None = None
    """`Exp3Feedback` options to let the per-source loss steer the mixture; None: off"""
    num_workers: int = 0
    """DataLoader worker processes per rank"""
    block_size: int = 1024
    """records per shuffle block"""
    share_tolerance: float | None = 0.005
    """how far (relative) a segment may take its source past its target share; null: cut documents only at window ends"""
    min_segment_tokens: int = 64
    """the shortest piece a share cut leaves"""
    prefetch_blocks: int = 1
    """blocks per source tokenized ahead in a background thread; 0: tokenize in the data loading thread"""


@dataclass
class OptimizerConfig:
    """AdamW as in the paper (section 2.5). Weight decay applies to every Linear and Embedding weight; biases
    and LayerNorm parameters never decay (transformers' Trainer rule, `Trainer.get_decay_parameter_names`)."""

    learning_rate: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    warmup_steps: int = 2000
    lr_scheduler_type: str = "cosine_with_min_lr"
    min_lr_rate: float = 0.1
    """cosine decays to this fraction of the peak (paper: 10%)"""


@dataclass
class TrainConfig:
    max_steps: int = 1000
    global_batch_tokens: int = 1_048_576
    """tokens per optimizer step over all ranks (paper: ~1M); accumulation is derived from it"""
    per_device_batch_size: int = 4
    """windows per forward pass on one device"""
    precision: str = "auto"
    """auto (bf16 on CUDA with bf16 support, else fp32) | bf16 | fp16 | fp32"""
    gradient_checkpointing: bool = False
    deepspeed: str | None = None
    """a DeepSpeed JSON (e.g. examples/configs/deepspeed/zero2.json); needs a distributed launcher"""
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 3
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    seed: int = 42
    deterministic: bool = False
    """bitwise-reproducible kernels (`TrainingArguments.full_determinism`): slower; for resume checks and debugging"""
    use_cpu: bool | None = None
    """None: CPU when no CUDA device is present"""


@dataclass
class MonitorsConfig:
    stability: dict[str, Any] | None = field(default_factory=dict)
    """`StabilityMonitor` options; None disables it"""
    throughput: dict[str, Any] | None = field(default_factory=dict)
    """`ThroughputMonitor` options; None disables it"""
    spike_guard: dict[str, Any] | None = field(default_factory=dict)
    """`SpikeGuard` options; None disables it"""


@dataclass
class RunConfig:
    run_name: str = "wonton-run"
    output_dir: str = "outputs"
    """the run writes into `<output_dir>/<run_name>/` (checkpoints, logs, final model)"""
    resume: str = "auto"
    """auto: continue from the newest complete checkpoint if any | never | a checkpoint directory"""
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    monitors: MonitorsConfig = field(default_factory=MonitorsConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name

    def gradient_accumulation_steps(self, world_size: int) -> int:
        """Batches per optimizer step so that one step sees `global_batch_tokens` over `world_size` ranks."""
        per_pass = self.data.seq_len * self.train.per_device_batch_size * world_size
        steps = self.train.global_batch_tokens / per_pass
        if steps < 1 or not math.isclose(steps, round(steps)):
            raise ValueError(
                f"`train.global_batch_tokens` ({self.train.global_batch_tokens:,}) must be a positive multiple of "
                f"data.seq_len x train.per_device_batch_size x world size = {self.data.seq_len} x "
                f"{self.train.per_device_batch_size} x {world_size} = {per_pass:,}; change one of them."
            )
        return int(round(steps))

    def validate(self) -> None:
        """Every check that needs no model, tokenizer or data: fails before any work starts."""
        from ..models.wonton import WONTON_PRESETS

        if self.model.preset not in WONTON_PRESETS:
            raise ValueError(f"`model.preset` {self.model.preset!r} is unknown; choose one of {sorted(WONTON_PRESETS)}.")
        if not self.data.sources:
            raise ValueError("`data.sources` is empty: list at least one source (name, paths, weight).")
        positive = {"data.seq_len": self.data.seq_len, "train.max_steps": self.train.max_steps,
                    "train.per_device_batch_size": self.train.per_device_batch_size,
                    "train.global_batch_tokens": self.train.global_batch_tokens,
                    "train.logging_steps": self.train.logging_steps, "train.save_steps": self.train.save_steps,
                    "data.min_segment_tokens": self.data.min_segment_tokens,
                    "optimizer.learning_rate": self.optimizer.learning_rate}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"`{name}` must be positive, got {value}.")
        if self.data.share_tolerance is not None and not self.data.share_tolerance >= 0:
            raise ValueError(f"`data.share_tolerance` must be null or >= 0, got {self.data.share_tolerance}.")
        if self.data.prefetch_blocks < 0:
            raise ValueError(f"`data.prefetch_blocks` must be >= 0 (0 turns read-ahead off), got {self.data.prefetch_blocks}.")
        if self.optimizer.warmup_steps < 0 or not 0 <= self.optimizer.min_lr_rate <= 1:
            raise ValueError("`optimizer.warmup_steps` must be >= 0 and `optimizer.min_lr_rate` in [0, 1].")
        if self.train.precision not in {"auto", "bf16", "fp16", "fp32"}:
            raise ValueError(f"`train.precision` must be auto, bf16, fp16 or fp32, got {self.train.precision!r}.")

    def check_files(self) -> None:
        """The files the run will open exist (checked at launch, not at load, so configs for other machines load)."""
        if self.resume not in {"auto", "never"} and not Path(self.resume).is_dir():
            raise ValueError(f"`resume` must be auto, never or an existing checkpoint directory, got {self.resume!r}.")
        if self.train.deepspeed is not None and not Path(self.train.deepspeed).is_file():
            raise ValueError(f"`train.deepspeed` file {self.train.deepspeed} does not exist.")
        if self.tokenizer.path is not None and not Path(self.tokenizer.path).exists():
            raise ValueError(f"`tokenizer.path` {self.tokenizer.path} does not exist (or leave it empty to train one).")


def build_dataclass(cls: type, values: dict[str, Any] | None, where: str = "") -> Any:
    """A dataclass from a YAML mapping; nested dataclass fields recurse; unknown keys name the section."""
    values = dict(values or {})
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"Unknown key(s) {unknown} in `{where or 'the run config'}`; known keys: {sorted(known)}.")
    kwargs = {}
    for name, value in values.items():
        sub = known[name].default_factory if known[name].default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            value = build_dataclass(sub, value, f"{where}.{name}".lstrip("."))
        elif name == "betas":
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`train.max_steps=50 data.seq_len=512 model.overrides.qk_layernorm=false`: values parsed as YAML."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} must look like `section.key=value`.")
        dotted, raw = item.split("=", 1)
        node = values
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"Override {item!r}: `{key}` is not a section.")
        node[leaf] = yaml.safe_load(raw)
    return values


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None, **base: Any) -> RunConfig:
    """Read a run YAML (or start from `base`), apply CLI overrides, validate; paths are relative to the YAML."""
    values: dict[str, Any] = dict(base)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Run config {path} does not exist.")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a mapping of sections (model, data, train, ...).")
        values.update(loaded)
    values = apply_overrides(values, overrides or [])
    config = build_dataclass(RunConfig, values)
    config.validate()
    return config


def dump_run_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config next to the run, so a run can be reproduced from its own directory."""
    data = dataclasses.asdict(config)
    data["optimizer"]["betas"] = list(config.optimizer.betas)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
