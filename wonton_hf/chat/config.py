"""The SFT run config: the sections pretraining has too (monitors, the common train fields, the optimizer fields)
come from `wonton_hf.training.config`; the model and chat-data sections are SFT's own.

Like the pretraining config, it is read and checked whole before torch or transformers is imported
(`examples/sft.py --help-config` prints every field); errors are one `ConfigError` naming each field path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ..training.config import CommonTrainFields, MonitorsConfig, OptimizerFields, RunConfigBase
from ..training.model_check import ModelOverrides, PresetName, shape_problems, trained_tokenizer_size
from ..training.schema import AttnImplementation, Section, build, help_config, read_yaml_file, section_from_dataclass
from .formats import FORMATS, ChatSource

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
DEMO_DATA_DIR = Path(__file__).resolve().parent.parent / "demo" / "data"
PRETRAIN_DEMO_OUTPUT = "outputs/pretrain-demo/final"
"""Where `accelerate launch examples/pretrain.py` (the embedded pretraining demo) saves its model."""
PATH_VARIABLES = {"{samples}": str(SAMPLES_DIR)}


class SFTModelConfig(Section):
    path: str = "auto"
    """a save_pretrained directory (or hub id); auto: the pretraining demo's output if present, else a tiny model
    and tokenizer made on the spot (a pipeline demo, not a chat model worth talking to)"""
    tiny_preset: PresetName = "wonton-tiny"
    """preset of the on-the-spot model"""
    tiny_vocab_size: int = Field(2048, ge=297)
    """tokenizer size of the on-the-spot model (trained on the package's demo texts and chat samples)"""
    tiny_overrides: ModelOverrides = Field(default_factory=dict)
    """`WontonConfig` fields changed on top of `tiny_preset` (e.g. hidden_size, num_hidden_layers)"""
    attn_implementation: AttnImplementation | None = None
    """null: sdpa (its block-diagonal mask from position ids keeps packed conversations apart)"""
    trust_remote_code: bool = False
    """run modelling code shipped with the checkpoint (`auto_map`); off unless you trust its source.
    Wonton checkpoints need none while wonton_hf is installed"""


ChatSourceConfig = section_from_dataclass(ChatSource, {"format": Literal[FORMATS]})
"""One instruction data set: the fields and rules of `wonton_hf.chat.formats.ChatSource`."""


class SFTDataConfig(Section):
    sources: list[ChatSourceConfig] = Field(default_factory=list)
    """the instruction data sets (name, format, path, weight, split, languages, subsets, max_records)"""
    max_length: int = Field(2048, gt=0)
    """tokens per packed row (without packing: longer conversations are truncated)"""
    packing: bool = True
    """best-fit-decreasing packing, padding-free; conversations longer than max_length are truncated"""
    num_proc: int | None = Field(None, ge=1)
    """processes for TRL's tokenisation (`dataset_num_proc`)"""


SFT_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
"""transformers schedulers that run with no `lr_scheduler_kwargs`"""


class SFTTrainConfig(CommonTrainFields, OptimizerFields):
    epochs: float = Field(3.0, gt=0)
    """paper: 1-3"""
    max_steps: int = -1
    """> 0 overrides epochs; -1: train `epochs`"""
    learning_rate: float = Field(2e-5, gt=0)
    """peak learning rate (paper: 2e-5)"""
    lr_scheduler_type: Literal[OptimizerFields.model_fields["lr_scheduler_type"].annotation.__args__] = "cosine"
    """a transformers `SchedulerType`"""
    global_batch_size: int = Field(512, gt=0)
    """rows per optimizer step over all ranks (packed rows with packing, conversations without)"""
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    """share of the training steps spent warming up"""
    save_total_limit: int | None = Field(2, ge=1)
    """checkpoints kept (oldest deleted first); null keeps all"""
    assistant_only_loss: bool = True
    """loss on answers (and their </s>) only, as in the report; false trains on every token"""

    @field_validator("lr_scheduler_type")
    @classmethod
    def _scheduler_needs_no_options(cls, value: str) -> str:
        # These need options an SFT config does not carry (a floor, WSD's phases, an eval metric) and would
        # otherwise fail inside transformers after the model is loaded.
        if value not in SFT_SCHEDULERS:
            raise ValueError(
                f"{value!r} needs options SFT configs do not set; use one of {', '.join(SFT_SCHEDULERS)} "
                "(pretraining run configs set WSD and cosine floors)"
            )
        return value

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("must be -1 (train `epochs`) or a positive number of steps")
        return value


class SFTRunConfig(RunConfigBase):
    WHAT: ClassVar[str] = "SFT config"
    run_name: str = "sft"
    """name of the run directory"""
    resume: str = "never"
    """never | auto (the newest complete checkpoint in the run directory) | a checkpoint directory"""
    model: SFTModelConfig = Field(default_factory=SFTModelConfig)
    data: SFTDataConfig = Field(default_factory=SFTDataConfig)
    train: SFTTrainConfig = Field(default_factory=SFTTrainConfig)
    monitors: MonitorsConfig = Field(default_factory=MonitorsConfig)
    """the pretraining monitors (wonton_hf.callbacks); `monitors.<name>: null` turns one off"""

    def batch_terms(self) -> tuple[tuple[str, int], list[tuple[str, int]]]:
        return (
            ("train.global_batch_size", self.train.global_batch_size),
            [("train.per_device_batch_size", self.train.per_device_batch_size)],
        )

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        if self.model.path == "auto":  # the on-the-spot model, unless the pretraining demo's output exists
            model = self.model
            size = trained_tokenizer_size(model.tiny_vocab_size)
            found += shape_problems(
                model.tiny_preset, model.tiny_overrides, "model.tiny_overrides", self.data.max_length, size
            )
        return found


def expand_path_variables(spec: dict[str, Any]) -> dict[str, Any]:
    """A chat source with `PATH_VARIABLES` (e.g. the package's sample folder) replaced in its path(s)."""

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
    """Read an SFT YAML, apply `section.key=value` overrides, check everything (no model or data touched).

    Raises `ConfigError` (a `ValueError`) listing every problem, each with its field path.
    """
    values = read_yaml_file(path, "SFT config") if path is not None else {}
    return build(SFTRunConfig, values, "SFT config", overrides)


def sft_config_help() -> str:
    return help_config(SFTRunConfig, "SFT run config (examples/configs/sft/*.yaml)")
