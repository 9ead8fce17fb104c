"""The backends the store contract suite runs on.

A new backend adds one entry to ``BACKENDS`` (an async context manager factory that
yields a fresh, empty store) and runs the whole suite unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from aiocircuit.persistence import InMemoryPersistence, PersistenceStore


@asynccontextmanager
async def _memory() -> AsyncIterator[PersistenceStore]:
    async with InMemoryPersistence() as store:
        yield store


BACKENDS: dict[str, Callable[[], AbstractAsyncContextManager[PersistenceStore]]] = {
    "memory": _memory,
}


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest) -> AsyncIterator[PersistenceStore]:
    async with BACKENDS[request.param]() as backend:
        yield backend
