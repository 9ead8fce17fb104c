"""The backends the store contract suite runs on, each on every event loop it supports.

A new backend adds one entry to ``BACKENDS`` (an async context manager factory that
yields a fresh, empty store) and to ``COMBINATIONS``, and runs the whole suite
unchanged. DynamoDB runs on asyncio only (aioboto3); that it refuses trio is pinned by
its own test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from aiocircuit.persistence import InMemoryPersistence, PersistenceStore


@asynccontextmanager
async def _memory(request: pytest.FixtureRequest) -> AsyncIterator[PersistenceStore]:
    async with InMemoryPersistence() as store:
        yield store


@asynccontextmanager
async def _dynamodb(request: pytest.FixtureRequest) -> AsyncIterator[PersistenceStore]:
    from aiocircuit.persistence.dynamodb import DynamoDBPersistence

    # The single-threaded server: the suite asserts exactly one winner of racing writes.
    server = request.getfixturevalue("counting_moto")
    table = request.getfixturevalue("table_name")
    await DynamoDBPersistence.create_table(table, endpoint_url=server.url)
    async with DynamoDBPersistence(table, endpoint_url=server.url) as store:
        yield store


BACKENDS: dict[
    str, Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[PersistenceStore]]
] = {"memory": _memory, "dynamodb": _dynamodb}

COMBINATIONS = [("memory", "asyncio"), ("memory", "trio"), ("dynamodb", "asyncio")]


@pytest.fixture(params=COMBINATIONS, ids=[f"{b}-{loop}" for b, loop in COMBINATIONS])
def backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(backend: tuple[str, str]) -> str:
    return backend[1]


@pytest.fixture
async def store(
    backend: tuple[str, str], request: pytest.FixtureRequest
) -> AsyncIterator[PersistenceStore]:
    async with BACKENDS[backend[0]](request) as instance:
        yield instance
