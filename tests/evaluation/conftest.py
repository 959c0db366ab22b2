"""Session fixtures for the evaluation tests: offline dataset copies and a tiny saved Wonton checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from .fixtures import build_tiny_checkpoint, write_offline_data

pytest.importorskip("lm_eval", reason="the evaluation capability needs the `eval` extra (lm_eval)")


@pytest.fixture(scope="session")
def offline_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_offline_data(tmp_path_factory.mktemp("offline_data"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_wonton"))
