"""Shared fixtures: every async test runs on asyncio and on trio; moto's DynamoDB API
on loopback for the tests that need a real DynamoDB wire protocol. And the `extras`
mark, which ``--no-extras`` leaves out."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path

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


# -- the tests that need an optional extra ---------------------------------------------
#
# Every test that needs an optional extra (aioboto3, httpx, aiohttp), or a tool only the
# whole suite installs (moto, Powertools, starlette), is marked `extras`, by the rules
# below. `pytest --no-extras` leaves them out, and does not even import the modules made
# only of them (they import an extra at the top): that is `nox -s tests-core`, run with
# none of those installed. A test that needs one and escapes these rules fails there.

_HERE = Path(__file__).parent
# Directories and modules whose every test needs one.
_EXTRAS_PATHS = tuple(_HERE / path for path in ("contrib", "dynamodb", "fleet", "test_cli.py"))
# Parametrized cases elsewhere whose id names a call form, a store or a docs page that
# uses one: test_cancellation's httpx and aiohttp forms, the store contract's DynamoDB
# backend, test_docs' examples for DynamoDB, httpx, aiohttp and FastAPI (starlette).
_EXTRAS_ID = re.compile(r"(?:^|[-/])(?:httpx|aiohttp|dynamodb|fastapi)(?:[-.\]]|$)")
# Fixtures that start moto's server (every one of them asks for this one).
_EXTRAS_FIXTURE = "aws_credentials"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--no-extras",
        action="store_true",
        help="leave out the tests marked `extras`: those that need an optional extra, or "
        "moto, Powertools or starlette (see tests/conftest.py)",
    )


def _under_extras_path(path: Path) -> bool:
    return any(path == root or root in path.parents for root in _EXTRAS_PATHS)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if config.getoption("no_extras") and _under_extras_path(collection_path):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    extras = pytest.mark.extras
    kept: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        if (
            _under_extras_path(item.path)
            or _EXTRAS_ID.search(item.name.partition("[")[2])
            or _EXTRAS_FIXTURE in getattr(item, "fixturenames", ())
        ):
            item.add_marker(extras)
        if config.getoption("no_extras") and item.get_closest_marker("extras"):
            left_out.append(item)
        else:
            kept.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept
