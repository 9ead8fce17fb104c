"""A failing or slow store never breaks a call: the call runs as if the circuit were
closed, a warning names the cause, nothing from the failure is cached, and the store is
left alone for a growing back-off instead of being hit by every call."""

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
from aiocircuit._gateway import BACKOFF_INITIAL, BACKOFF_MAX, REMINDER_INTERVAL
from aiocircuit.testing import FakeClock

from .stores import InstrumentedStore

pytestmark = pytest.mark.anyio


def state_of(breaker: CircuitBreaker) -> CircuitState:
    """``breaker.state``, read through a call: after ``assert breaker.state is X``, mypy
    takes ``breaker.state`` to stay X, even across the calls that change it."""
    return breaker.state


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
    """A store read that raises: the call runs, one warning names the cause, calls
    during the back-off leave the store alone, and the first call after it asks again."""
    store = InstrumentedStore()
    store.fail.add("read")
    breaker = CircuitBreaker("c", store, config=CONFIG, clock=clock)
    with caplog.at_level(logging.WARNING, logger="aiocircuit"):
        assert await breaker.call(ok) == "ok"
        assert await breaker.call(ok) == "ok"
        assert store.calls["read"] == 1
        clock.advance(BACKOFF_INITIAL)
        assert await breaker.call(ok) == "ok"
    assert store.calls["read"] == 2
    messages = warnings(caplog)
    assert len(messages) == 1
    assert "ConnectionError" in messages[0]
    assert "failing open" in messages[0]
    assert not any(r.exc_info for r in caplog.records)  # an expected error: no traceback


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
    assert store.calls["trip"] == 1  # the second streak's trip fell in the back-off
    assert breaker.state is CircuitState.CLOSED
    store.fail.clear()
    assert await breaker.call(ok) == "ok"
    clock.advance(BACKOFF_INITIAL)
    for _ in range(2):
        with pytest.raises(ConnectionError, match="downstream down"):
            await breaker.call(down)
    assert state_of(breaker) is CircuitState.OPEN


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
    clock.advance(BACKOFF_INITIAL)
    assert await breaker.call(ok) == "ok"  # now elected, probes and closes
    assert state_of(breaker) is CircuitState.CLOSED


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
    clock.advance(BACKOFF_INITIAL)
    assert await breaker.call(ok) == "ok"
    assert state_of(breaker) is CircuitState.CLOSED


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


async def test_store_outage_is_one_warning_and_a_few_operations(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that keeps failing, 20 calls a second for a minute and a half: every call
    runs; the store sees one operation per back-off (growing to BACKOFF_MAX), not one
    per call; the log has one warning when it goes bad, a reminder per
    REMINDER_INTERVAL, and one info line when it answers again."""
    store = InstrumentedStore()
    store.fail.add("read")
    config = CONFIG.model_copy(update={"local_cache_max_age": 0})
    breaker = CircuitBreaker("c", store, config=config, clock=clock)
    with caplog.at_level(logging.INFO, logger="aiocircuit"):
        for _ in range(90 * 20):
            assert await breaker.call(ok) == "ok"
            clock.advance(0.05)
        # 1, 2, 4, 8, 16, then every 30 s: attempts at 0, 1, 3, 7, 15, 31, 61.
        assert store.calls["read"] == 7
        messages = warnings(caplog)
        assert len(messages) == 2, messages
        assert "store read failed" in messages[0]
        assert "still failing after 61s" in messages[1]
        store.fail.clear()
        clock.advance(BACKOFF_MAX)
        assert await breaker.call(ok) == "ok"
    back = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(back) == 1
    assert "answering again" in back[0]
    assert not any(r.exc_info for r in caplog.records)
    assert REMINDER_INTERVAL == 60  # the reminder above came at the first attempt past it


async def test_unexpected_store_error_logs_its_traceback_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An error a store does not normally raise (a bug in a custom store) is logged with
    its traceback, once per outage."""
    store = InstrumentedStore()
    store.inner = None  # type: ignore[assignment]  # every read raises AttributeError
    breaker = CircuitBreaker("c", store, config=CONFIG, clock=clock)
    with caplog.at_level(logging.WARNING, logger="aiocircuit"):
        for _ in range(4):  # each past the back-off, all within the first reminder
            assert await breaker.call(ok) == "ok"
            clock.advance(16)
    assert store.calls["read"] == 4
    records = [r for r in caplog.records if r.name == "aiocircuit"]
    assert len(records) == 1
    assert records[0].exc_info is not None
    assert records[0].exc_info[0] is AttributeError


async def test_backoff_is_per_circuit(clock: FakeClock) -> None:
    """One circuit whose store operations fail leaves another circuit on the same store
    alone: a corrupted record must not make every circuit fail open."""
    store = InstrumentedStore()
    broken = CircuitBreaker("broken", store, config=CONFIG, clock=clock)
    healthy = CircuitBreaker("healthy", store, config=CONFIG, clock=clock)
    store.fail.add("read")
    assert await broken.call(ok) == "ok"
    store.fail.clear()
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await healthy.call(down)
    assert healthy.state is CircuitState.OPEN
