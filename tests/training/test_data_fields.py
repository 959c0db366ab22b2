"""Data-scheduler fields of the run config that map onto `OnlineDataScheduler` arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from wonton_hf.training import ConfigError, load_run_config
from wonton_hf.training import config as run_config

DEMO = Path(__file__).resolve().parents[2] / "examples" / "configs" / "runs" / "wonton-tiny-cpu.yaml"


def test_config_and_scheduler_share_the_budget_rule():
    from wonton_hf.data import settings

    assert run_config.min_buffer_tokens is settings.min_buffer_tokens


def test_buffer_tokens_is_checked_against_the_read_ahead():
    config = load_run_config(DEMO, ["data.buffer_tokens=100000", "data.prefetch_blocks=1"])
    assert config.data.buffer_tokens == 100_000
    with pytest.raises(ConfigError, match=r"data\.buffer_tokens.*65,536"):
        load_run_config(DEMO, ["data.buffer_tokens=40000", "data.prefetch_blocks=1"])
