"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

import pytest

from aiocircuit.testing import FakeClock


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
