"""One run = one YAML file: model, tokenizer, data mixture, batch, optimizer, schedule, monitors, output.

The file maps onto the typed sections below (pydantic models; each field's docstring is its documentation,
`examples/pretrain.py --help-config` prints them all). `section.key=value` overrides from the command line are
applied first, then the whole config is checked at once — types, ranges, enumerations, unknown keys in every
section down to `data.sources[2]` and `monitors.stability`, the model shape against the model's own rules
(`model_check`) — before torch or transformers is imported and long before any tokenizer, data or model is
touched; every problem comes back in one `ConfigError` that names the field path. The sections that mirror a
class (`DataSource`, `Exp3Feedback`, the monitors' options) are built from that class, whose `problems()` are
their rules. Relative paths in the config (sources, tokenizer, mixture file, DeepSpeed JSON) are resolved from
the current directory, like every other path on the command line. Everything the Trainer needs is derived
here (gradient accumulation from the token batch and the world size, precision from the hardware), in one
place a reader can check against the paper's section 2.5.

The sections SFT shares with pretraining (`monitors`, the common `train` fields, the optimizer fields) are
defined once here and reused by `wonton_hf.chat.sft`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BeforeValidator, Field, field_validator

from ..callbacks.options import SpikeGuardOptions, StabilityOptions, ThroughputOptions
from ..data.mixture import Exp3Feedback
from ..data.settings import min_buffer_tokens
from ..data.sources import EXHAUSTION_POLICIES, FORMATS, READ_ERROR_POLICIES, TXT_UNITS, DataSource
from ..evaluation.downstream_options import DownstreamOptions
from .model_check import ModelOverrides, PresetName, model_problems
from .schema import (
    LR_SCHEDULERS,
    AttnImplementation,
    ConfigError,
    Precision,
    Section,
    apply_overrides,
    build,
    close_match,
    help_config,
    read_yaml_file,
    section_from_dataclass,
)

__all__ = [
    "CommonTrainFields",
    "ConfigError",
    "DataConfig",
    "DownstreamConfig",
    "EvaluationConfig",
    "FsdpConfig",
    "ModelConfig",
    "MonitorsConfig",
    "OptimizerConfig",
    "OptimizerFields",
    "RunConfig",
    "RunConfigBase",
    "TrainConfig",
    "apply_overrides",
    "dump_run_config",
    "load_run_config",
    "run_config_help",
]

# ---- sections shared with SFT ----

StabilityOptionsSection = section_from_dataclass(StabilityOptions)
ThroughputOptionsSection = section_from_dataclass(ThroughputOptions)
SpikeGuardOptionsSection = section_from_dataclass(SpikeGuardOptions)


class MonitorsConfig(Section):
    """The paper's monitors (`wonton_hf.callbacks`); `{}` turns one on with its defaults, `null` turns it off."""

    stability: StabilityOptionsSection | None = Field(default_factory=StabilityOptionsSection)
    """`StabilityMonitor` options; null disables it"""
    throughput: ThroughputOptionsSection | None = Field(default_factory=ThroughputOptionsSection)
    """`ThroughputMonitor` options; null disables it"""
    spike_guard: SpikeGuardOptionsSection | None = Field(default_factory=SpikeGuardOptionsSection)
    """`SpikeGuard` options; null disables it"""


class OptimizerFields(Section):
    """AdamW as in the paper (section 2.5). Weight decay applies to every Linear and Embedding weight; biases
    and LayerNorm parameters never decay (transformers' Trainer rule, `Trainer.get_decay_parameter_names`)."""

    learning_rate: float = Field(3e-4, gt=0)
    """peak learning rate"""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW (beta1, beta2)"""
    weight_decay: float = Field(0.1, ge=0)
    """decoupled weight decay of Linear and Embedding weights"""
    max_grad_norm: float = Field(1.0, gt=0)
    """gradient clipping (global L2 norm)"""
    lr_scheduler_type: Literal[LR_SCHEDULERS] = "cosine_with_min_lr"
    """a transformers `SchedulerType`"""

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError("both betas must be in [0, 1)")
        return betas


# ---- FSDP2 (fully_shard through accelerate; wonton_hf/training/fsdp.py) ----


class FsdpConfig(Section):
    """FSDP2: parameters, gradients and optimizer state sharded over the ranks (`torch.distributed.fsdp.fully_shard`
    per decoder layer, through accelerate's plugin and the HF Trainer). `{}` turns it on with these defaults."""

    layer_classes: list[str] | None = None
    """module classes sharded one by one (one all-gather each); null: the model's decoder layer (WontonDecoderLayer)"""
    reshard_after_forward: bool = True
    """free each layer's gathered parameters after its forward (gathered again in backward): less memory, more
    communication; false keeps them until backward (ZeRO-2-like)"""
    activation_checkpointing: bool = False
    """recompute each layer's activations in backward (FSDP's own; use it instead of train.gradient_checkpointing)"""
    state_dict_type: Literal["sharded", "full"] = "sharded"
    """checkpoints as torch DCP shards written by every rank (resumable on another number of processes) | one full
    state dict gathered on rank 0; the final model is always saved full"""
    reduce_dtype: Literal["fp32", "bf16"] = "fp32"
    """gradient reduce-scatter dtype when train.precision is bf16/fp16 (parameters are cast for compute; the
    sharded fp32 master weights and optimizer state stay fp32)"""


def fsdp_problems(train: Any) -> list[tuple[str, str]]:
    """`train.fsdp` against the rest of the `train` section (pretraining and SFT)."""
    fsdp, found = train.fsdp, []
    if fsdp is None:
        return found
    if train.deepspeed is not None:
        found.append(
            ("train.fsdp", "and train.deepspeed are both set: choose one (FSDP2 shards like ZeRO-3; null the other).")
        )
    if train.gradient_checkpointing:
        found.append(
            (
                "train.gradient_checkpointing",
                "is true with train.fsdp: use train.fsdp.activation_checkpointing instead (the Trainer's own "
                "checkpointing adds a redundant all-gather per layer under FSDP).",
            )
        )
    if train.precision == "fp16":
        found.append(
            (
                "train.precision",
                "fp16 with train.fsdp is not supported here (loss scaling over sharded gradients is "
                "untested): use bf16.",
            )
        )
    if fsdp.reduce_dtype != "fp32" and train.precision == "fp32":
        found.append(
            (
                "train.fsdp.reduce_dtype",
                f"got {fsdp.reduce_dtype!r} with train.precision fp32: without mixed precision nothing is cast and "
                "gradients reduce in fp32 anyway; remove it or set train.precision: bf16.",
            )
        )
    if fsdp.layer_classes is not None and not fsdp.layer_classes:
        found.append(("train.fsdp.layer_classes", "is empty: name the layer class(es), or null for the decoder layer."))
    if getattr(train, "average_last", None) and fsdp.state_dict_type == "sharded":
        found.append(
            (
                "train.average_last",
                "averages the checkpoints' model.safetensors, which sharded FSDP checkpoints do not write: set "
                "train.fsdp.state_dict_type: full, or average_last: null.",
            )
        )
    return found


class CommonTrainFields(Section):
    """What every run passes to `TrainingArguments` the same way (pretraining and SFT)."""

    per_device_batch_size: int = Field(4, gt=0)
    """rows (windows) per forward pass on one device"""
    precision: Precision = "auto"
    """auto (bf16 on CUDA with bf16 support, else fp32) | bf16 | fp16 | fp32"""
    gradient_checkpointing: bool = False
    """recompute activations in backward (less memory, ~20-30% slower)"""
    deepspeed: str | None = None
    """a DeepSpeed JSON (e.g. examples/configs/deepspeed/zero2.json); needs a distributed launcher"""
    use_cpu: bool | None = None
    """null: CPU when no CUDA device is present"""
    fsdp: FsdpConfig | None = None
    """FSDP2 sharding (`{}`: on with its defaults); null: off (DDP, or DeepSpeed with `deepspeed`)"""
    logging_steps: int = Field(10, gt=0)
    """optimizer steps between two log events (one console line each)"""
    save_steps: int = Field(500, gt=0)
    """optimizer steps between two checkpoints"""
    save_total_limit: int | None = Field(3, ge=1)
    """checkpoints kept (oldest deleted first); null keeps all"""
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    """`TrainingArguments.report_to` integrations (tensorboard, wandb, trackio, none, ...)"""
    seed: int = 42
    """seed of the initial weights, the data order and the sampling"""
    preemption_signals: list[Literal["SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP"]] = Field(
        default_factory=lambda: ["SIGTERM", "SIGUSR1"]
    )
    """signals that end the current step, write a complete checkpoint on every rank and exit (preemption); [] keeps
    Python's default (die at once)"""
    preemption_exit_code: int = Field(143, ge=0, le=255)
    """exit code after a preemption checkpoint (143 = 128 + SIGTERM, what schedulers read as "terminated")"""


# ---- pretraining sections ----


class ModelConfig(Section):
    preset: PresetName = "wonton-tiny"
    """a `WONTON_PRESETS` name (wonton-tiny, wonton-125m, wonton-1b, wonton-1.5b-public, wonton-7b)"""
    overrides: ModelOverrides = Field(default_factory=dict)
    """`WontonConfig` fields to change on top of the preset (vocab_size follows the tokenizer automatically)"""
    init_from: str | None = None
    """continue from a `save_pretrained` directory instead of a fresh initialisation"""
    attn_implementation: AttnImplementation | None = None
    """eager | sdpa | flex_attention | flash_attention_2; null: sdpa (flex on CUDA would also keep documents apart)"""


class TokenizerConfig(Section):
    path: str | None = None
    """a tokenizer directory (`AutoTokenizer`); null: train one from the data sources at start-up"""
    vocab_size: int = Field(8192, ge=384)
    """size of the tokenizer trained at start-up (rounded up to a multiple of 128; >= specials + bytes + required)"""
    max_documents_per_source: int = Field(2000, gt=0)
    """documents read from each source to train it (keeps start-up short)"""


DATA_FORMATS = FORMATS
"""`wonton_hf.data.sources.FORMATS` (the name the config's users import)."""


def _one_path(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


SourceConfig = section_from_dataclass(
    DataSource,
    {
        "paths": Annotated[list[str], BeforeValidator(_one_path)],
        "normaliser": str | None,  # `module:function` in a config (a callable only from Python)
        "format": Literal[FORMATS] | None,
        "exhaustion": Literal[EXHAUSTION_POLICIES],
        "txt_unit": Literal[TXT_UNITS],
        "on_read_error": Literal[READ_ERROR_POLICIES],
    },
)
"""One corpus of the mixture: the fields and rules of `wonton_hf.data.DataSource`."""


class SchedulePoint(Section):
    at: float = Field(ge=0)
    """the step (or token count) from which these weights hold"""
    weights: dict[str, float]
    """source name -> weight"""


class ScheduleConfig(Section):
    """`wonton_hf.data.WeightSchedule`: weights over steps or tokens."""

    points: list[SchedulePoint] = Field(min_length=1)
    """breakpoints, strictly increasing `at`"""
    unit: Literal["step", "tokens"] = "step"
    """`step` (optimizer steps) or `tokens` (tokens seen by the whole run)"""
    interpolation: Literal["constant", "linear"] = "constant"
    """`constant` (piecewise constant) or `linear`"""


FeedbackConfig = section_from_dataclass(Exp3Feedback)
"""`wonton_hf.data.Exp3Feedback`: the per-source training loss steers the mixture (ODM's EXP3)."""


class DataConfig(Section):
    sources: list[SourceConfig] = Field(default_factory=list)
    """the corpora (`DataSource` fields: name, paths, weight, format, text_field, language, exhaustion, ...);
    in `paths`, `{package_data}` is the demo samples shipped with the package, `{stdlib}` Python's standard library"""
    seq_len: int = Field(2048, gt=0)
    """tokens per packed window"""
    stratified: bool = False
    """each batch matches the weights up to one document"""
    schedule: ScheduleConfig | None = None
    """weights over steps or tokens (piecewise constant or linear); null: fixed weights"""
    mixture_file: str | None = None
    """YAML/JSON `{source: weight}` re-read every `mixture_every_n_steps` (live edits without restart)"""
    mixture_every_n_steps: int = Field(50, ge=1)
    """optimizer steps between two reads of `mixture_file`"""
    feedback: FeedbackConfig | None = None
    """loss feedback on the mixture; null: off"""
    num_workers: int = Field(0, ge=0)
    """DataLoader worker processes per rank"""
    block_size: int = Field(1024, ge=1)
    """records per shuffle block"""
    share_tolerance: float | None = Field(0.005, ge=0)
    """how far (relative) a segment may take its source past its target share; null: cut documents only at window ends"""
    min_segment_tokens: int = Field(64, gt=0)
    """the shortest piece a share cut leaves"""
    prefetch_blocks: int = Field(1, ge=0)
    """tokenizer batches per source read and tokenized ahead in a background thread; 0: in the data loading thread"""
    buffer_tokens: int = Field(262_144, gt=0)
    """per source and shard, the most token ids held ahead of the packer (4 bytes each: 1 MiB by default); bounds
    memory whatever the document length; at least 32,768 x (prefetch_blocks + 1)"""


class EvaluationConfig(Section):
    """In-loop evaluation: held-out documents carved from the run's own sources (by a hash of their text, so the
    split is the same for every layout, world size and resume), plus explicit evaluation files; the held-out loss
    and bits per byte per source every `eval_steps` (docs/training.md, "In-loop evaluation")."""

    eval_steps: int = Field(100, gt=0)
    """optimizer steps between two evaluations (the Trainer's `eval_steps`); must be <= train.max_steps"""
    held_out_share: float | None = Field(0.01, gt=0, lt=1)
    """share of every training source's documents the training stream never yields; null: carve nothing (evaluate
    only `extra_sources`)"""
    windows_per_source: int = Field(8, gt=0)
    """`data.seq_len` windows per source in the fixed evaluation set (fewer if a source has too few held-out
    documents)"""
    sources: list[str] | None = None
    """training sources that get a held-out evaluation set; null: all (the share is held out of every source)"""
    extra_sources: list[SourceConfig] = Field(default_factory=list)
    """explicit evaluation corpora (`DataSource` fields; `weight` unused): all their documents are evaluated"""
    batch_size: int | None = Field(None, gt=0)
    """windows per evaluation forward pass on one device; null: train.per_device_batch_size"""
    feedback_from_held_out: bool = False
    """EXP3 loss feedback (`data.feedback`) takes each evaluation's held-out loss per source as its reward
    instead of the training loss"""

    def problems(self, config: Any) -> list[tuple[str, str]]:
        """The checks against the rest of the run config: names, the interval, the feedback switch."""
        found = []
        names = [s.name for s in config.data.sources]
        for i, name in enumerate(self.sources or []):
            if name not in names:
                hint = close_match(name, names)
                found.append(
                    (f"evaluation.sources[{i}]", f"unknown source {name!r}{hint}; sources: {', '.join(names)}.")
                )
        if self.sources is not None and not self.sources:
            found.append(("evaluation.sources", "is empty: list sources, or null for all."))
        for i, extra in enumerate(self.extra_sources):
            if extra.name in names or extra.name in [e.name for e in self.extra_sources[:i]]:
                found.append((f"evaluation.extra_sources[{i}].name", f"got {extra.name!r}: the name is already used."))
        if self.held_out_share is None and not self.extra_sources:
            found.append(("evaluation.held_out_share", "is null and no extra_sources are given: nothing to evaluate."))
        if self.eval_steps > config.train.max_steps:
            found.append(
                (
                    "evaluation.eval_steps",
                    f"got {self.eval_steps}: the run has only train.max_steps = {config.train.max_steps} steps, so "
                    f"no evaluation would ever run; set it to at most {config.train.max_steps} (or set "
                    "`evaluation: null` to train without evaluating).",
                )
            )
        if self.feedback_from_held_out and config.data.feedback is None:
            found.append(("evaluation.feedback_from_held_out", "is true but data.feedback is null: turn EXP3 on."))
        return found


DownstreamConfig = section_from_dataclass(DownstreamOptions)
"""`wonton_hf.evaluation.DownstreamEvaluation`: lm-eval tasks on the model in memory at checkpoints (its fields and
rules); the checks that need the rest of the config or the files are `RunConfig`'s."""


def downstream_problems(config: Any) -> list[tuple[str, str]]:
    """The downstream section against the rest of the config: sharded weights, an interval that never fires."""
    downstream = config.downstream
    if downstream is None or not downstream.enabled:
        return []
    if config.train.fsdp is not None:
        # FSDP2 leaves each rank a shard of every weight: the main process alone cannot run lm-eval's forwards
        return [
            (
                "downstream",
                "is set with train.fsdp: under FSDP2 no rank holds the whole weights, so the main process cannot score "
                "the tasks; set `downstream: null` and score saved checkpoints with `wonton-hf eval`, or train with "
                "DDP or ZeRO-2.",
            )
        ]
    if downstream.every_n_steps is None or downstream.at_save:
        return []
    if downstream.every_n_steps > config.train.max_steps:
        return [
            (
                "downstream.every_n_steps",
                f"got {downstream.every_n_steps}: the run has only train.max_steps = {config.train.max_steps} steps, "
                f"so no downstream evaluation would ever run; set it to at most {config.train.max_steps}, or set "
                "at_save: true.",
            )
        ]
    return []


def downstream_file_problems(config: Any) -> list[tuple[str, str]]:
    """What the downstream tasks need at launch: their data (local files complete, or the hub reachable) and
    weights that one rank holds whole (not DeepSpeed ZeRO-3)."""
    downstream, found = config.downstream, []
    if downstream is None or not downstream.enabled:
        return found
    deepspeed = config.train.deepspeed
    if deepspeed is not None and Path(deepspeed).is_file():
        stage = (read_json_object(deepspeed).get("zero_optimization") or {}).get("stage")
        if stage == 3:
            found.append(
                (
                    "downstream",
                    f"cannot run under DeepSpeed ZeRO-3 ({deepspeed}): lm-eval scores the model in memory on one "
                    "rank, which holds only a shard of the weights; use ZeRO-2, or set `downstream: null` and run "
                    "`wonton-hf eval` on the saved checkpoints.",
                )
            )
    if downstream.data_dir is None:
        for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
            if os.environ.get(variable, "").upper() in {"1", "ON", "YES", "TRUE"}:
                found.append(
                    (
                        "downstream.data_dir",
                        f"is null (download the tasks' data from the hub) but {variable} is set: give local copies "
                        "(DIR/<hub dataset name>/<config>/<split>.jsonl) or unset the variable.",
                    )
                )
                break
        return found
    if not Path(downstream.data_dir).is_dir():
        return found + [("downstream.data_dir", f"{downstream.data_dir} is not a directory.")]
    from ..evaluation.downstream_options import resolve_tasks
    from ..evaluation.suites import builtin_task_configs, offline_source, resolve_offline_files

    for task, (_, builtin) in builtin_task_configs(resolve_tasks(downstream.tasks)).items():
        _, problems = resolve_offline_files(offline_source(task, builtin), Path(downstream.data_dir))
        found += [("downstream.data_dir", problem + ".") for problem in problems]
    return found


def read_json_object(path: str | Path) -> dict[str, Any]:
    import json

    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class OptimizerConfig(OptimizerFields):
    eps: float = Field(1e-8, gt=0)
    """AdamW epsilon"""
    warmup_steps: int = Field(2000, ge=0)
    """linear warm-up steps"""
    min_lr_rate: float = Field(0.1, ge=0, le=1)
    """cosine_with_min_lr and warmup_stable_decay end at this fraction of the peak (paper: 10%)"""
    decay_fraction: float = Field(0.2, gt=0, le=1)
    """warmup_stable_decay: the decay phase as a fraction of train.max_steps (MiniCPM: ~10%; Hägele et al. 2024: 20%)"""
    decay_steps: int | None = Field(None, ge=1)
    """warmup_stable_decay: the decay phase in optimizer steps (replaces decay_fraction when set)"""
    decay_type: Literal["linear", "cosine", "1-sqrt"] = "1-sqrt"
    """warmup_stable_decay: the decay's shape; 1-sqrt did best in Hägele et al. 2024 (arXiv 2405.18392)"""

    def wsd_decay_steps(self, max_steps: int) -> int:
        """The decay phase in steps: `decay_steps`, else `decay_fraction` of the run (at least one step)."""
        return self.decay_steps if self.decay_steps is not None else max(1, round(self.decay_fraction * max_steps))


# ---- torch.compile and float8 (`training/compilation.py`, `training/float8.py`) ----

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""`torch.compile` modes (null: torch's default)."""
FLOAT8_RECIPES = ("tensorwise", "rowwise", "rowwise_with_gw_hp")
"""torchao's float8 training recipes (`Float8LinearConfig.from_recipe_name`)."""


class CompileConfig(Section):
    """`torch.compile` of every decoder layer, in place; the mask, the loss and the hooks stay eager (the module
    docstring of `wonton_hf.training.compilation` says why)."""

    backend: Literal["inductor", "aot_eager", "eager"] = "inductor"
    """inductor (generated kernels) | aot_eager (traces forward and backward, runs them eagerly: a check) | eager"""
    mode: Literal[COMPILE_MODES] | None = None
    """a `torch.compile` mode; null: torch's default"""
    fullgraph: bool = False
    """fail on a graph break inside a layer instead of splitting the graph"""
    dynamic: bool | None = None
    """dynamic shapes: null lets torch decide (packed windows have one shape, so they compile once)"""


class Float8Config(Section):
    """float8 linears (torchao through accelerate's `AORecipeKwargs`); needs a GPU of compute capability >= 8.9."""

    recipe: Literal[FLOAT8_RECIPES] = "tensorwise"
    """tensorwise (fastest) | rowwise | rowwise_with_gw_hp (most accurate): torchao's scaling recipes"""


class AccelerationFields(Section):
    """The `train` fields that change how each step computes, not what it computes."""

    compile: CompileConfig | None = None
    """`torch.compile` per decoder layer (`{}`: on with inductor); null: eager"""
    float8: Float8Config | None = None
    """float8 linears in the decoder layers (`{}`: tensorwise); null: off. GPUs of compute capability >= 8.9 only,
    refused at launch elsewhere"""

    def rules(self) -> list[tuple[str, str]]:
        """float8 runs under bf16 autocast and on a GPU: a config asking for another precision or the CPU is wrong
        on every machine (the GPU's own capability is checked at launch, `training.float8.check_float8`)."""
        found = []
        if self.float8 is not None and self.precision not in ("auto", "bf16"):
            found.append(
                (
                    "float8",
                    f"needs bf16 around the float8 matmuls, got precision {self.precision!r}: set "
                    "`train.precision: bf16` (or auto), or `train.float8: null`.",
                )
            )
        if self.float8 is not None and self.use_cpu:
            found.append(("float8", "float8 needs a GPU and train.use_cpu is true: set `train.float8: null`."))
        return found


class TrainConfig(CommonTrainFields, AccelerationFields):
    max_steps: int = Field(1000, gt=0)
    """optimizer steps of the run"""
    average_last: int | None = Field(None, ge=2)
    """after training, average the weights of the last K complete checkpoints into `final-averaged/`; null: off"""
    global_batch_tokens: int = Field(1_048_576, gt=0)
    """tokens per optimizer step over all ranks (paper: ~1M); gradient accumulation is derived from it"""
    deterministic: bool = False
    """bitwise-reproducible kernels (`TrainingArguments.full_determinism`): slower; for resume checks and debugging"""


class RunConfigBase(Section):
    """What pretraining and SFT run configs share: where the run writes, how it resumes, the checks of the batch,
    the source names and the files, and the error type. Subclasses add their sections and `batch_terms`."""

    WHAT: ClassVar[str] = "run config"
    run_name: str = "wonton-run"
    """name of the run directory"""
    output_dir: str = "outputs"
    """the run writes into `<output_dir>/<run_name>/` (checkpoints, logs, final model, data report)"""
    resume: str = "auto"
    """auto: continue from the newest complete checkpoint if any | never | a checkpoint directory"""

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name

    def batch_terms(self) -> tuple[tuple[str, int], list[tuple[str, int]]]:
        """(the global batch field and value, the per-pass factors) whose quotient is the accumulation."""
        raise NotImplementedError

    def gradient_accumulation_steps(self, world_size: int) -> int:
        """Batches per optimizer step so that one step sees the global batch over `world_size` ranks."""
        problem = self._batch_problem(world_size)
        if problem:
            raise ConfigError([problem], self.WHAT)
        (_, total), factors = self.batch_terms()
        return round(total / (math.prod(v for _, v in factors) * world_size))

    def _batch_problem(self, world_size: int) -> tuple[str, str] | None:
        (name, total), factors = self.batch_terms()
        per_pass = math.prod(v for _, v in factors) * world_size
        steps = total / per_pass
        if steps >= 1 and math.isclose(steps, round(steps)):
            return None
        names = " x ".join([n for n, _ in factors] + ["world size"])
        values = " x ".join([str(v) for _, v in factors] + [str(world_size)])
        return (
            name,
            f"got {total:,}: must be a positive multiple of {names} = {values} = {per_pass:,}; change one of them.",
        )

    def problems(self) -> list[tuple[str, str]]:
        """The checks that involve several fields (each field alone was checked by its type)."""
        found = []
        names = [s.name for s in self.data.sources]
        if not names:
            found.append(("data.sources", "is empty: list at least one source."))
        for i, name in enumerate(names):
            if name in names[:i]:
                found.append((f"data.sources[{i}].name", f"got {name!r}: the name is used by an earlier source."))
        batch = self._batch_problem(int(os.environ.get("WORLD_SIZE", "1")))
        return found + ([batch] if batch else []) + fsdp_problems(self.train)

    def validate(self) -> None:
        """Re-check the whole config (e.g. after fields were changed in code); raises `ConfigError`."""
        build(type(self), self.model_dump(), self.WHAT)

    def file_problems(self) -> list[tuple[str, str]]:
        found = []
        if self.resume not in {"auto", "never"} and not Path(self.resume).is_dir():
            found.append(("resume", f"got {self.resume!r}: must be auto, never or an existing checkpoint directory."))
        if self.train.deepspeed is not None and not Path(self.train.deepspeed).is_file():
            found.append(("train.deepspeed", f"file {self.train.deepspeed} does not exist."))
        return found

    def check_files(self) -> None:
        """The files the run will open exist (checked at launch, not at load, so configs for other machines load)."""
        found = self.file_problems()
        if found:
            raise ConfigError(found, self.WHAT)


class RunConfig(RunConfigBase):
    model: ModelConfig = Field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    monitors: MonitorsConfig = Field(default_factory=MonitorsConfig)
    evaluation: EvaluationConfig | None = None
    """in-loop held-out evaluation (`{}`: on with its defaults); null: off"""
    downstream: DownstreamConfig | None = None
    """lm-eval tasks on the model in memory every N steps and/or at each save (`{tasks: [...]}`); null: off"""

    def batch_terms(self) -> tuple[tuple[str, int], list[tuple[str, int]]]:
        return (
            ("train.global_batch_tokens", self.train.global_batch_tokens),
            [("data.seq_len", self.data.seq_len), ("train.per_device_batch_size", self.train.per_device_batch_size)],
        )

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        names = [s.name for s in self.data.sources]
        if names and not any(s.weight > 0 for s in self.data.sources):
            found.append(("data.sources", "every weight is 0: give at least one source a positive weight."))
        if self.data.schedule is not None:
            ats = [p.at for p in self.data.schedule.points]
            if any(b <= a for a, b in zip(ats, ats[1:], strict=False)):
                found.append(("data.schedule.points", f"got at = {ats}: must be strictly increasing."))
            for i, point in enumerate(self.data.schedule.points):
                for name in point.weights:
                    if name not in names:
                        found.append(
                            (
                                f"data.schedule.points[{i}].weights.{name}",
                                f"unknown source{close_match(name, names)}; sources: {', '.join(names)}.",
                            )
                        )
        found += self._schedule_problems()
        found += self.evaluation.problems(self) if self.evaluation is not None else []
        found += downstream_problems(self)
        least = min_buffer_tokens(self.data.prefetch_blocks)
        if self.data.buffer_tokens < least:
            found.append(
                (
                    "data.buffer_tokens",
                    f"got {self.data.buffer_tokens}: must be >= {least:,} (one text piece per tokenizer batch "
                    "in flight, data.prefetch_blocks + 1); raise it or lower prefetch_blocks.",
                )
            )
        found += model_problems(self)
        return found

    def _schedule_problems(self) -> list[tuple[str, str]]:
        """WSD's phases must fit in the run; `average_last` needs that many checkpoints kept."""
        opt, train, found = self.optimizer, self.train, []
        wsd = opt.lr_scheduler_type == "warmup_stable_decay"
        if not wsd and opt.decay_steps is not None:
            found.append(
                (
                    "optimizer.decay_steps",
                    f"got {opt.decay_steps}: only used by lr_scheduler_type "
                    "warmup_stable_decay; remove it or set that scheduler.",
                )
            )
        if wsd and opt.warmup_steps + opt.wsd_decay_steps(train.max_steps) > train.max_steps:
            field = "optimizer.decay_steps" if opt.decay_steps is not None else "optimizer.decay_fraction"
            found.append(
                (
                    field,
                    f"warm-up ({opt.warmup_steps}) + decay ({opt.wsd_decay_steps(train.max_steps)}) "
                    f"steps exceed train.max_steps ({train.max_steps}): shorten one of them.",
                )
            )
        if train.average_last is not None:
            if train.save_total_limit is not None and train.save_total_limit < train.average_last:
                found.append(
                    (
                        "train.average_last",
                        f"got {train.average_last}: train.save_total_limit "
                        f"({train.save_total_limit}) keeps fewer checkpoints; raise it "
                        "to at least average_last or set it to null.",
                    )
                )
            if train.max_steps // train.save_steps < train.average_last:
                found.append(
                    (
                        "train.average_last",
                        f"got {train.average_last}: the run saves only "
                        f"{train.max_steps // train.save_steps} checkpoint(s) "
                        f"(max_steps {train.max_steps} / save_steps {train.save_steps}).",
                    )
                )
        return found

    def file_problems(self) -> list[tuple[str, str]]:
        found = super().file_problems()
        if self.tokenizer.path is not None and not Path(self.tokenizer.path).exists():
            found.append(("tokenizer.path", f"{self.tokenizer.path} does not exist (or leave it null to train one)."))
        if self.model.init_from is not None and not Path(self.model.init_from).exists():
            found.append(("model.init_from", f"{self.model.init_from} does not exist."))
        return found + downstream_file_problems(self)


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None, **base: Any) -> RunConfig:
    """Read a run YAML (or start from `base`), apply `section.key=value` overrides, check everything.

    Raises `ConfigError` (a `ValueError`) listing every problem, each with its field path.
    """
    values: dict[str, Any] = dict(base)
    if path is not None:
        values.update(read_yaml_file(path, "run config"))
    return build(RunConfig, values, "run config", overrides)


def run_config_help() -> str:
    return help_config(RunConfig, "Pretraining run config (examples/configs/runs/*.yaml)")


def dump_run_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config next to the run, so a run can be reproduced from its own directory."""
    data = config.model_dump(mode="json")
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
