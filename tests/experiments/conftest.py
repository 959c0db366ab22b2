"""The experiment scripts live in examples/experiments (not a package): their folder goes on sys.path while a
test module imports them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "examples" / "experiments"
DEMO_DATA = Path(__file__).resolve().parents[2] / "wonton_hf" / "demo" / "data"


@pytest.fixture(scope="module")
def experiments_on_path():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        yield EXPERIMENTS
    finally:
        sys.path.remove(str(EXPERIMENTS))
