"""The code examples in docs/ run as written."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
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
    source: str, counting_moto: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Lambda handler example serves several invocations against DynamoDB (moto on
    loopback, reached through the standard endpoint variable, so the example needs no
    test-only code), and really reads the store (counted at the server)."""
    from aiocircuit import CircuitBreakerPersistenceError
    from aiocircuit._portal import run_blocking
    from aiocircuit.persistence import DynamoDBPersistence, PersistenceStore

    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", counting_moto.url)
    # Another example may have created the table already; if creating it failed for any
    # other reason, the handler's store cannot be read and the count below stays 0.
    with contextlib.suppress(CircuitBreakerPersistenceError):
        asyncio.run(DynamoDBPersistence.create_table(EXAMPLE_TABLE))
    reads_before = counting_moto.counts["GetItem"]
    namespace = _run(source)
    try:
        for order in ("o-1", "o-2", "o-3"):
            assert namespace["lambda_handler"]({"order_id": order}, None) == {
                "statusCode": 200,
                "body": f"order {order} charged",
            }
    finally:
        # A module-level store lives as long as its process; this one is dropped with
        # the test, so close the client a sync handler opened on the shim's portal.
        for value in namespace.values():
            if isinstance(value, PersistenceStore):
                run_blocking(value.aclose)
    assert counting_moto.counts["GetItem"] > reads_before
