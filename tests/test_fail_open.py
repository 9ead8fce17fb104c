"""A failing or slow store never breaks a call: the call runs as if the circuit were
closed, a warning names the cause, and nothing from the failure is cached."""

from __future__ import annotations

import logging

import anyio
import pytest

from aiocircuit import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerPersistenceError,
    CircuitState,
)
from aiocircuit.testing import FakeClock

from .stores import InstrumentedStore

pytestmark = pytest.mark.anyio

CONFIG = CircuitBreakerConfig(
    failure_threshold=2, success_threshold=1, recovery_timeout=10, local_cache_max_age=5
)


async def ok() -> str:
    return "ok"


async def down() -> None:
    raise ConnectionError("downstream down")


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "aiocircuit" and r.levelno == logging.WARNING
    ]


async def test_read_failure_fails_open_uncached(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A store read that raises: the call runs, one warning names the cause, and the
    next call tries the store again."""
    store = InstrumentedStore()
    store.fail.add("read")
    breaker = CircuitBreaker("c", store, config=CONFIG, clock=clock)
    with caplog.at_level(logging.WARNING, logger="aiocircuit"):
        assert await breaker.call(ok) == "ok"
        assert await breaker.call(ok) == "ok"
    assert store.calls["read"] == 2
    messages = warnings(caplog)
    assert len(messages) == 2
    assert "ConnectionError" in messages[0]
    assert "failing open" in messages[0]


async def test_read_failure_rejects_nothing_when_open(clock: FakeClock) -> None:
    """Even a circuit that is open in the store runs calls while the store is
    unreachable: fail open."""
    store = InstrumentedStore()
    breaker = CircuitBreaker("c", store, config=CONFIG, clock=clock)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(down)
    assert breaker.state is CircuitState.OPEN
    store.fail.add("read")
    clock.advance(5)
    assert await breaker.call(ok) == "ok"


async def test_trip_write_failure_keeps_callers_exception(clock: FakeClock) -> None:
    """A failed trip write: the caller still sees the downstream's exception, and the
    breaker stays usable."""
    store = InstrumentedStore()
    store.fail.add("trip")
    breaker = CircuitBreaker("c", store, config=CONFIG, clock=clock)
    for _ in range(4):
        with pytest.raises(ConnectionError, match="downstream down"):
            await breaker.call(down)
    assert store.calls["trip"] == 2  # each full streak tried once
    assert breaker.state is CircuitState.CLOSED
    store.fail.clear()
    assert await breaker.call(ok) == "ok"


async def test_election_failure_fails_open(clock: FakeClock) -> None:
    """A probe election that errors (not a lost condition) runs the call as if closed
    instead of leaking the store's error."""
    store = InstrumentedStore()
    breaker = CircuitBreaker("c", store, config=CONFIG, clock=clock)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(down)
    clock.advance(10)
    store.fail.add("acquire_probe")
    assert await breaker.call(ok) == "ok"
    assert breaker.state is CircuitState.OPEN
    store.fail.clear()
    assert await breaker.call(ok) == "ok"  # now elected, probes and closes
    assert breaker.state is CircuitState.CLOSED


async def test_close_write_failure_retries_on_next_success(clock: FakeClock) -> None:
    """A failed close keeps the lease; the next probe success tries to close again."""
    store = InstrumentedStore()
    breaker = CircuitBreaker("c", store, config=CONFIG, clock=clock)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(down)
    clock.advance(10)
    store.fail.add("close")
    assert await breaker.call(ok) == "ok"
    assert breaker.state is CircuitState.HALF_OPEN
    store.fail.clear()
    assert await breaker.call(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


async def test_slow_store_is_abandoned_after_store_timeout(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that never answers is abandoned after store_timeout: the call runs and
    the warning says it timed out."""
    store = InstrumentedStore()
    store.stall.add("read")
    config = CONFIG.model_copy(update={"store_timeout": 0.02})
    breaker = CircuitBreaker("c", store, config=config, clock=clock)
    with caplog.at_level(logging.WARNING, logger="aiocircuit"):
        assert await breaker.call(ok) == "ok"
    assert any("store_timeout" in m for m in warnings(caplog))


async def test_slow_trip_write_does_not_hang_the_caller(clock: FakeClock) -> None:
    """A stalled trip write is abandoned after store_timeout; the caller gets the
    downstream's exception."""
    store = InstrumentedStore()
    store.stall.add("trip")
    config = CONFIG.model_copy(update={"store_timeout": 0.02})
    breaker = CircuitBreaker("c", store, config=config, clock=clock)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(down)


async def test_failed_shared_read_fails_open_for_all_waiters(clock: FakeClock) -> None:
    """Callers waiting on a shared read that fails all run (fail open), with one read."""
    store = InstrumentedStore()
    store.gate = anyio.Event()
    breaker = CircuitBreaker("c", store, config=CONFIG, clock=clock)
    results: list[str] = []

    async def one() -> None:
        results.append(await breaker.call(ok))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        store.inner = None  # type: ignore[assignment]  # the held read now raises
        store.gate.set()
    assert results == ["ok"] * 20
    assert store.calls["read"] == 1


async def test_info_raises_persistence_error(clock: FakeClock) -> None:
    """info() is an explicit store query: a store failure raises
    CircuitBreakerPersistenceError chained from the cause."""
    store = InstrumentedStore()
    store.fail.add("read")
    breaker = CircuitBreaker("c", store, config=CONFIG, clock=clock)
    with pytest.raises(CircuitBreakerPersistenceError) as caught:
        await breaker.info()
    assert isinstance(caught.value.__cause__, ConnectionError)
