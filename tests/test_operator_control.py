"""Operator control: force_open, force_closed and reset, obeyed by the whole fleet."""

from __future__ import annotations

import pytest

from aiocircuit import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitBreakerPersistenceError,
    CircuitInfo,
    CircuitState,
    CircuitTransition,
)
from aiocircuit.persistence import InMemoryPersistence
from aiocircuit.testing import FakeClock

from .stores import InstrumentedStore

pytestmark = pytest.mark.anyio

CONFIG = CircuitBreakerConfig(
    failure_threshold=1, success_threshold=1, recovery_timeout=10, local_cache_max_age=5
)


async def ok() -> str:
    return "ok"


async def fail() -> None:
    raise ConnectionError("down")


def fleet(clock: FakeClock, size: int = 2, **kwargs: object) -> list[CircuitBreaker]:
    store = InMemoryPersistence()
    return [
        CircuitBreaker("ops", store, config=CONFIG, clock=clock, **kwargs)  # type: ignore[arg-type]
        for _ in range(size)
    ]


async def test_force_open_is_obeyed_by_the_fleet(clock: FakeClock) -> None:
    """force_open rejects every call here at once, and in every other process within
    local_cache_max_age."""
    events: list[CircuitTransition] = []
    operator, other = fleet(clock, on_transition=events.append)
    assert await other.call(ok) == "ok"  # caches CLOSED
    info = await operator.force_open()
    assert info == CircuitInfo("ops", CircuitState.FORCED_OPEN, 0, 1_800_000_000)
    with pytest.raises(CircuitBreakerOpenError) as caught:
        await operator.call(ok)
    assert caught.value.circuit.state is CircuitState.FORCED_OPEN
    clock.advance(5)
    with pytest.raises(CircuitBreakerOpenError):
        await other.call(ok)
    assert events == [
        CircuitTransition("ops", CircuitState.CLOSED, CircuitState.FORCED_OPEN, 1_800_000_000)
    ]


async def test_forced_open_never_probes(clock: FakeClock) -> None:
    """However long it stays forced open, no call is ever admitted as a probe."""
    (breaker,) = fleet(clock, size=1)
    await breaker.force_open()
    for _ in range(5):
        clock.advance(100)
        with pytest.raises(CircuitBreakerOpenError):
            await breaker.call(ok)
    assert breaker.state is CircuitState.FORCED_OPEN


async def test_forced_closed_never_trips(clock: FakeClock) -> None:
    """A forced-closed circuit runs every call and never trips, whatever fails."""
    operator, other = fleet(clock)
    await operator.force_closed()
    for breaker in (operator, other):
        for _ in range(5):
            with pytest.raises(ConnectionError):
                await breaker.call(fail)
    assert operator.state is CircuitState.FORCED_CLOSED
    assert other.state is CircuitState.FORCED_CLOSED


async def test_force_closed_ends_an_outage(clock: FakeClock) -> None:
    """Forcing an open circuit closed admits calls at once, without a probe."""
    (breaker,) = fleet(clock, size=1)
    with pytest.raises(ConnectionError):
        await breaker.call(fail)
    assert breaker.state is CircuitState.OPEN
    await breaker.force_closed()
    assert await breaker.call(ok) == "ok"


async def test_reset_returns_to_ordinary_closed(clock: FakeClock) -> None:
    """reset lifts a forced state: the circuit trips and recovers normally again."""
    events: list[CircuitTransition] = []
    (breaker,) = fleet(clock, size=1, on_transition=events.append)
    await breaker.force_open()
    info = await breaker.reset()
    assert info == CircuitInfo("ops", CircuitState.CLOSED, 0, None)
    with pytest.raises(ConnectionError):
        await breaker.call(fail)
    assert breaker.state is CircuitState.OPEN
    assert [(e.from_state, e.to_state) for e in events] == [
        (CircuitState.CLOSED, CircuitState.FORCED_OPEN),
        (CircuitState.FORCED_OPEN, CircuitState.CLOSED),
        (CircuitState.CLOSED, CircuitState.OPEN),
    ]


async def test_force_open_during_a_probe_fences_it_out(clock: FakeClock) -> None:
    """A probe running when an operator forces the circuit open cannot close it."""
    operator, prober = fleet(clock)
    with pytest.raises(ConnectionError):
        await prober.call(fail)
    clock.advance(10)

    async def forced_meanwhile() -> str:
        await operator.force_open()
        return "probe ok"

    assert await prober.call(forced_meanwhile) == "probe ok"
    assert (await prober.info()).state is CircuitState.FORCED_OPEN


async def test_force_raises_when_the_store_fails(clock: FakeClock) -> None:
    """Operator writes are explicit: a store failure raises instead of failing open."""
    store = InstrumentedStore()
    store.fail.add("force")
    breaker = CircuitBreaker("ops", store, config=CONFIG, clock=clock)
    with pytest.raises(CircuitBreakerPersistenceError) as caught:
        await breaker.force_open()
    assert isinstance(caught.value.__cause__, ConnectionError)


async def test_forced_open_retry_after_is_an_open_period_not_the_cache_age(
    clock: FakeClock,
) -> None:
    """A forced-open circuit never probes, so its rejections do not say "retry in a
    moment" (the cache's age): they say recovery_timeout, the wait of an ordinary open
    period, however old the cached record is."""
    a, b = fleet(clock)
    await a.force_open()
    for elapsed in (0.0, 4.5, 5.0, 30.0):
        clock.advance(elapsed)
        for breaker in (a, b):
            with pytest.raises(CircuitBreakerOpenError) as caught:
                await breaker.call(ok)
            assert caught.value.retry_after == CONFIG.recovery_timeout
