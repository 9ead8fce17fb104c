"""The sync shim: the same state machine, store and callbacks for blocking code."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
import pytest

from aiocircuit import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitInfo,
    CircuitState,
    CircuitTransition,
)
from aiocircuit.persistence import InMemoryPersistence
from aiocircuit.testing import FakeClock

from .stores import InstrumentedStore

CONFIG = CircuitBreakerConfig(
    failure_threshold=2, success_threshold=1, recovery_timeout=10, local_cache_max_age=5
)


def fail() -> None:
    raise ConnectionError("down")


@pytest.mark.parametrize("store_kind", ["memory", "portal"])
def test_plain_def_trips_and_recovers(clock: FakeClock, store_kind: str) -> None:
    """@breaker on a plain def trips, rejects and recovers, on the in-memory store and
    on an async-only store reached through the portal."""
    store = InMemoryPersistence() if store_kind == "memory" else InstrumentedStore()
    events: list[CircuitTransition] = []
    breaker = CircuitBreaker("sync", store, config=CONFIG, clock=clock, on_transition=events.append)
    healthy = True

    @breaker
    def handler(x: int) -> int:
        if not healthy:
            raise ConnectionError("down")
        return x * 2

    assert handler(2) == 4
    healthy = False
    for _ in range(2):
        with pytest.raises(ConnectionError):
            handler(1)
    with pytest.raises(CircuitBreakerOpenError):
        handler(1)
    healthy = True
    clock.advance(10)
    assert handler(5) == 10
    assert breaker.state is CircuitState.CLOSED
    assert [e.to_state for e in events] == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]


def test_sync_with_block(clock: FakeClock) -> None:
    """`with breaker:` records the block's outcome and raises the open error on entry."""
    breaker = CircuitBreaker("with", InMemoryPersistence(), config=CONFIG, clock=clock)
    for _ in range(2):
        with pytest.raises(ConnectionError), breaker:
            fail()
    with pytest.raises(CircuitBreakerOpenError), breaker:
        pytest.fail("an open circuit must not run the block")
    clock.advance(10)
    with breaker:
        pass
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_base_exceptions_never_count(clock: FakeClock, exc_type: type[BaseException]) -> None:
    """KeyboardInterrupt, SystemExit and GeneratorExit pass through and never count."""
    breaker = CircuitBreaker(
        "base", InMemoryPersistence(), config=CircuitBreakerConfig(failure_threshold=1), clock=clock
    )

    @breaker
    def interrupted() -> None:
        raise exc_type()

    for _ in range(3):
        with pytest.raises(exc_type):
            interrupted()
    assert breaker.state is CircuitState.CLOSED


def test_async_callbacks_run_through_the_shim(clock: FakeClock) -> None:
    """Async on_circuit_open and on_transition work for a plain def, via the portal."""
    events: list[CircuitTransition] = []

    async def record(transition: CircuitTransition) -> None:
        await anyio.lowlevel.checkpoint()
        events.append(transition)

    async def fallback(order: str, *, circuit: CircuitInfo) -> str:
        await anyio.lowlevel.checkpoint()
        return f"buffered {order} ({circuit.state})"

    breaker = CircuitBreaker(
        "callbacks",
        InMemoryPersistence(),
        config=CONFIG,
        clock=clock,
        on_circuit_open=fallback,
        on_transition=record,
    )

    @breaker
    def send(order: str) -> str:
        raise ConnectionError(order)

    for _ in range(2):
        with pytest.raises(ConnectionError):
            send("o")
    assert send("o-9") == "buffered o-9 (OPEN)"
    assert [e.to_state for e in events] == [CircuitState.OPEN]


def test_sync_call_timeout_counts_overruns(clock: FakeClock) -> None:
    """A blocking call cannot be cancelled: one that overruns call_timeout returns its
    result but counts as a failure."""
    breaker = CircuitBreaker(
        "slow",
        InMemoryPersistence(),
        config=CircuitBreakerConfig(failure_threshold=1, call_timeout=1),
        clock=clock,
    )

    @breaker
    def slow() -> str:
        clock.advance(2)
        return "late"

    assert slow() == "late"
    assert breaker.state is CircuitState.OPEN


@pytest.mark.anyio
async def test_shim_inside_event_loop_thread_raises(clock: FakeClock) -> None:
    """The sync shim refuses to block an event loop's thread on store I/O, with a
    message that says what to do instead."""
    breaker = CircuitBreaker("loop", InstrumentedStore(), config=CONFIG, clock=clock)

    @breaker
    def handler() -> str:
        return "ran"

    with pytest.raises(RuntimeError, match="event loop"):
        handler()


@pytest.mark.anyio
async def test_shim_from_worker_thread(clock: FakeClock) -> None:
    """From a worker thread of a running loop, the sync shim works through the portal."""
    breaker = CircuitBreaker("worker", InstrumentedStore(), config=CONFIG, clock=clock)

    @breaker
    def handler() -> str:
        return "ran"

    assert await anyio.to_thread.run_sync(handler) == "ran"


def test_sync_shim_with_in_memory_store_needs_no_portal(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the in-memory store with plain callbacks, the shim never starts the portal."""
    import aiocircuit._portal as portal

    def no_portal(*args: Any) -> Any:
        raise AssertionError("the portal was used")

    monkeypatch.setattr(portal, "shared_portal", no_portal)  # every way to the portal
    breaker = CircuitBreaker("memory", InMemoryPersistence(), config=CONFIG, clock=clock)
    protected = breaker(fail)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            protected()
    clock.advance(10)
    with breaker:
        pass
    assert breaker.state is CircuitState.CLOSED
