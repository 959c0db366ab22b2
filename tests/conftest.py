"""Shared test setup: offline, deterministic, small."""

import os

# Tests never reach a hub: everything they load is made by the tests themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _transformers_suite_markers() -> set[str]:
    """Markers that transformers' common model tests (imported by tests/models/test_transformers_common.py
    from ../shared) and `transformers.testing_utils` put on tests, so that `--strict-markers` accepts them.
    Read from the files rather than listed: the suite is refreshed from transformers from time to time."""
    import importlib.util
    import re
    from pathlib import Path

    from .paths import SHARED

    suite = SHARED / "transformers-tests"
    files = list((suite / "tests").rglob("*.py")) if suite.is_dir() else []
    spec = importlib.util.find_spec("transformers.testing_utils")
    if spec is not None and spec.origin:
        files.append(Path(spec.origin))
    names: set[str] = set()
    for path in files:
        names.update(re.findall(r"\bmark\.([A-Za-z_]\w*)", path.read_text(encoding="utf-8", errors="replace")))
    return names - {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings"}


def pytest_configure(config):
    for name in sorted(_transformers_suite_markers()):
        config.addinivalue_line("markers", f"{name}: marker of transformers' common model tests")
