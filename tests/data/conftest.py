"""Fixtures of the data scheduler tests (defined in data_fixtures.py)."""

from .data_fixtures import corpus, tokenizer  # noqa: F401
