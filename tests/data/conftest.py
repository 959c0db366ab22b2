"""Fixtures of the data scheduler tests (defined in data_fixtures.py)."""

import pytest

from .data_fixtures import corpus, tokenizer  # noqa: F401


@pytest.fixture
def s3():
    """A moto S3 server behind a fault-injecting proxy (skips the test when moto/s3fs are not installed)."""
    from .s3_server import FaultyS3

    server = FaultyS3()
    try:
        yield server
    finally:
        server.close()
