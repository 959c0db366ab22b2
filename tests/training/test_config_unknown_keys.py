"""Every section of the pretraining and SFT run configs refuses an unknown key, naming its path.

The sections are found by walking the config classes recursively (nested sections, optional sections, lists
of sections), so a section added later is covered at once; the walk asserts it found the sections known
today, so it cannot pass by finding none. Each unknown key goes in through a `key=value` override on a
shipped example config, the way a user would mistype it (`optimizer.warmup=5`).
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from wonton_hf.chat.sft import SFTRunConfig, load_sft_config
from wonton_hf.training import ConfigError, RunConfig, load_run_config

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN_EXAMPLE = ROOT / "examples" / "configs" / "runs" / "wonton-tiny-cpu.yaml"
SFT_EXAMPLE = ROOT / "examples" / "configs" / "sft" / "sft-tiny-cpu.yaml"
UNKNOWN = "wonton_unknown_key"


def _sections_in(annotation) -> list[tuple[str, type[BaseModel]]]:
    """(path suffix, section class) for each section an annotation holds: `X`, `X | None`, `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("", annotation)]
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [found for arg in get_args(annotation) for found in _sections_in(arg)]
    if origin in (list, tuple):
        return [(f"[0]{suffix}", cls) for arg in get_args(annotation) for suffix, cls in _sections_in(arg)]
    if origin is dict:
        return [(f".some_key{suffix}", cls) for suffix, cls in _sections_in(get_args(annotation)[-1])]
    return []


def section_paths(root: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths (`data.sources[0]`) of every section under `root`, depth first; "" is the root itself."""
    paths = [prefix]
    for name, info in root.model_fields.items():
        for suffix, cls in _sections_in(info.annotation):
            path = f"{prefix}.{name}{suffix}" if prefix else f"{name}{suffix}"
            paths += section_paths(cls, path)
    return paths


PRETRAIN_SECTIONS = section_paths(RunConfig)
SFT_SECTIONS = section_paths(SFTRunConfig)


def test_the_walk_finds_every_section():
    assert {
        "",
        "model",
        "tokenizer",
        "data",
        "data.sources[0]",
        "data.schedule",
        "data.schedule.points[0]",
        "data.feedback",
        "optimizer",
        "train",
        "monitors",
        "monitors.stability",
        "monitors.throughput",
        "monitors.spike_guard",
    } <= set(PRETRAIN_SECTIONS), PRETRAIN_SECTIONS
    assert {
        "",
        "model",
        "data",
        "data.sources[0]",
        "train",
        "monitors",
        "monitors.stability",
        "monitors.throughput",
        "monitors.spike_guard",
    } <= set(SFT_SECTIONS), SFT_SECTIONS


def _making_room(example: Path, section: str) -> list[str]:
    """Overrides that create the sections on the way to `section` which the example leaves out or sets to null
    (`monitors.spike_guard: null`, no `data.schedule`): `{}` for a section, `[{}]` for a list of them."""
    node, overrides, done = yaml.safe_load(example.read_text(encoding="utf-8")), [], ""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", section):
        index = part.startswith("[")
        if index:
            if not (isinstance(node, list) and node):
                overrides.append(f"{done}=[{{}}]")
                node = [{}]
            node, done = node[int(part[1:-1])], done + part
            continue
        done = f"{done}.{part}" if done else part
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            overrides.append(f"{done}={{}}")
            node = {}
    return overrides


def _unknown_key_problems(load, example: Path, section: str) -> dict[str, str]:
    key = f"{section}.{UNKNOWN}" if section else UNKNOWN
    with pytest.raises(ConfigError) as error:
        load(example, [*_making_room(example, section), f"{key}=5"])
    problems = dict(error.value.problems)
    assert key in problems, f"{key} was accepted; problems: {error.value}"
    assert problems[key].startswith("unknown key; accepted keys:"), problems[key]
    return problems


@pytest.mark.parametrize("section", PRETRAIN_SECTIONS)
def test_pretraining_sections_refuse_unknown_keys(section):
    _unknown_key_problems(load_run_config, PRETRAIN_EXAMPLE, section)


@pytest.mark.parametrize("section", SFT_SECTIONS)
def test_sft_sections_refuse_unknown_keys(section):
    _unknown_key_problems(load_sft_config, SFT_EXAMPLE, section)


def test_a_misspelt_optimizer_key_is_refused_next_to_a_valid_one():
    """The issue's example: `optimizer.lr=1e-3 optimizer.warmup=5` must not load silently."""
    with pytest.raises(ConfigError) as error:
        load_run_config(PRETRAIN_EXAMPLE, ["optimizer.lr=1e-3", "optimizer.warmup=5"])
    problems = dict(error.value.problems)
    assert set(problems) == {"optimizer.lr", "optimizer.warmup"}, error.value
    for problem in problems.values():
        assert problem.startswith("unknown key; ") and "learning_rate" in problem and "warmup_steps" in problem
