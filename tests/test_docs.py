"""The code examples in docs/ run as written."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).parent.parent / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
EXAMPLE_TABLE = "circuit-breaker-state"  # the table the DynamoDB examples name


def _examples(*, lambda_handlers: bool) -> list[Any]:
    return [
        pytest.param(block, id=f"{page.name}:{number}")
        for page in sorted(DOCS.glob("*.md"))
        for number, block in enumerate(BLOCK.findall(page.read_text()), start=1)
        if ("def lambda_handler" in block) == lambda_handlers
    ]


def _run(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(source, "<docs example>", "exec"), namespace)
    return namespace


@pytest.mark.anyio
@pytest.mark.parametrize("source", _examples(lambda_handlers=False))
async def test_example_runs(source: str) -> None:
    """Each example executes, and every `test_*` coroutine it defines passes."""
    for name, value in _run(source).items():
        if name.startswith("test_") and inspect.iscoroutinefunction(value):
            await value()


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
