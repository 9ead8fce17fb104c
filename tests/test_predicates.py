"""Failure by predicate: on the exception (replacing the class lists) and on the result."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from aiocircuit import CircuitBreaker, CircuitBreakerConfig, CircuitState
from aiocircuit.persistence import InMemoryPersistence
from aiocircuit.testing import FakeClock

pytestmark = pytest.mark.anyio


def state_of(breaker: CircuitBreaker) -> CircuitState:
    """``breaker.state``, read through a call: after ``assert breaker.state is X``, mypy
    takes ``breaker.state`` to stay X, even across the calls that change it."""
    return breaker.state


class Response:
    def __init__(self, status: int) -> None:
        self.status = status


def server_error(response: Response) -> bool:
    return response.status >= 500


def breaker(clock: FakeClock, **config: Any) -> CircuitBreaker:
    return CircuitBreaker(
        "predicates",
        InMemoryPersistence(),
        config=CircuitBreakerConfig(failure_threshold=2, **config),
        clock=clock,
    )


@pytest.mark.parametrize("form", ["call", "decorator", "sync"])
async def test_result_predicate_counts_returned_failures(clock: FakeClock, form: str) -> None:
    """A returned 503 counts as a failure (and is still returned); 200s reset the streak."""
    protected = breaker(clock, result_predicate=server_error)
    status = 503

    async def fetch() -> Response:
        return Response(status)

    def fetch_sync() -> Response:
        return Response(status)

    async def invoke() -> Response:
        if form == "call":
            return await protected.call(fetch)
        if form == "decorator":
            return await protected(fetch)()
        return protected(fetch_sync)()

    assert (await invoke()).status == 503
    status = 200
    assert (await invoke()).status == 200
    status = 503
    assert (await invoke()).status == 503
    assert protected.state is CircuitState.CLOSED
    assert (await invoke()).status == 503
    assert state_of(protected) is CircuitState.OPEN


async def test_failure_predicate_replaces_class_lists(clock: FakeClock) -> None:
    """failure_predicate decides which exceptions count."""
    protected = breaker(clock, failure_predicate=lambda exc: "timeout" in str(exc))

    async def raise_(message: str) -> None:
        raise RuntimeError(message)

    for _ in range(3):
        with pytest.raises(RuntimeError):
            await protected.call(raise_, "bad request")
    assert protected.state is CircuitState.CLOSED
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await protected.call(raise_, "upstream timeout")
    assert state_of(protected) is CircuitState.OPEN


async def test_broken_predicate_does_not_break_the_call(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A predicate that raises is logged; the call's own result still comes back, and
    counts as it would without the predicate."""

    def broken(response: Response) -> bool:
        raise KeyError("status")

    protected = breaker(clock, result_predicate=broken)

    async def fetch() -> Response:
        return Response(503)

    with caplog.at_level(logging.WARNING, logger="aiocircuit"):
        for _ in range(3):
            assert (await protected.call(fetch)).status == 503
    assert protected.state is CircuitState.CLOSED
    assert any("predicate" in r.getMessage() for r in caplog.records)
