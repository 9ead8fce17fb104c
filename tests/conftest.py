"""Shared fixtures: every async test runs on asyncio and on trio; moto's DynamoDB API
on loopback for the tests that need a real DynamoDB wire protocol."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from aiocircuit.testing import FakeClock

_tables = itertools.count()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def aws_credentials() -> Iterator[None]:
    """Fake credentials and region, so nothing ever reaches a real AWS account."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _credentials().items():
            patch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        yield


def _credentials() -> dict[str, str]:
    from .moto_server import CREDENTIALS

    return CREDENTIALS


@pytest.fixture(scope="session")
def moto_endpoint(aws_credentials: None) -> Iterator[str]:
    """URL of moto's ThreadedMotoServer on 127.0.0.1 (a free port), for the session."""
    from .moto_server import ThreadedEndpoint

    server = ThreadedEndpoint()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def counting_moto(aws_credentials: None) -> Iterator[object]:
    """A single-threaded moto server that counts requests per operation: for tests that
    assert exactly one winner, or count store traffic at the server."""
    from .moto_server import CountingEndpoint

    server = CountingEndpoint()
    yield server
    server.stop()


@pytest.fixture
def table_name() -> str:
    """A fresh table name per test."""
    return f"circuits-{os.getpid()}-{next(_tables)}"
