"""Fleet tests: many processes, or aiocircuit next to Powertools, on one DynamoDB table.

aioboto3 runs on asyncio only, so the async tests here run on asyncio alone.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
