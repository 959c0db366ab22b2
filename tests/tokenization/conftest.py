"""Fixtures of the tokenizer tests (defined in fixtures.py)."""

from .fixtures import language_corpus  # noqa: F401
