"""The code examples in docs/ run as written."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

DOCS = Path(__file__).parent.parent / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
EXAMPLE_TABLE = "circuit-breaker-state"  # the table the DynamoDB examples name
# aiohttp runs only on asyncio: examples that use it are not run on trio.
ASYNCIO_ONLY = re.compile(
    r"^(?:import aiohttp|from (?:aiohttp|aiocircuit\.contrib\.aiohttp)\b)", re.M
)


def _blocks(*, lambda_handlers: bool) -> list[tuple[str, str]]:
    return [
        (block, f"{page.relative_to(DOCS).as_posix()}:{number}")
        for page in sorted(DOCS.rglob("*.md"))
        for number, block in enumerate(BLOCK.findall(page.read_text()), start=1)
        if ("def lambda_handler" in block) == lambda_handlers
    ]


def _examples(*, lambda_handlers: bool) -> list[Any]:
    return [
        pytest.param(block, id=name) for block, name in _blocks(lambda_handlers=lambda_handlers)
    ]


def _examples_on_their_loops() -> list[Any]:
    # Every example on every loop it supports: aiohttp's on asyncio only.
    return [
        pytest.param(block, backend, id=f"{name}-{backend}")
        for block, name in _blocks(lambda_handlers=False)
        for backend in ("asyncio", "trio")
        if backend == "asyncio" or not ASYNCIO_ONLY.search(block)
    ]


def _run(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(source, "<docs example>", "exec"), namespace)
    return namespace


@pytest.mark.anyio
@pytest.mark.parametrize(("source", "anyio_backend"), _examples_on_their_loops())
async def test_example_runs(source: str, anyio_backend: str) -> None:
    """Each example executes, and every `test_*` function it defines passes: coroutines
    on the event loop, plain functions in a worker thread (as blocking code runs)."""
    for name, value in _run(source).items():
        if not name.startswith("test_") or not callable(value):
            continue
        if inspect.iscoroutinefunction(value):
            await value()
        else:
            await anyio.to_thread.run_sync(value)


@pytest.mark.parametrize("source", _examples(lambda_handlers=True))
def test_lambda_example_handles_invocations(
    source: str,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each Lambda handler example serves several invocations against DynamoDB (moto on
    loopback, reached through the standard endpoint variable, so the example needs no
    test-only code)."""
    from aiocircuit import CircuitBreakerPersistenceError
    from aiocircuit.persistence import DynamoDBPersistence

    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_endpoint)
    # Another example may have created the table already; if creating it failed for any
    # other reason, the handler's store would fail open and the warning check below fails.
    with contextlib.suppress(CircuitBreakerPersistenceError):
        asyncio.run(DynamoDBPersistence.create_table(EXAMPLE_TABLE))
    handler = _run(source)["lambda_handler"]
    with caplog.at_level(logging.WARNING, logger="aiocircuit"):
        for order in ("o-1", "o-2", "o-3"):
            assert handler({"order_id": order}, None) == {
                "statusCode": 200,
                "body": f"order {order} charged",
            }
    # No fail-open warning: the store was really reached.
    assert [r.getMessage() for r in caplog.records if r.name == "aiocircuit"] == []
