"""Time as the breaker reads it: a wall-clock step inside a process moves no local wait,
and a stored time that parses but is absurd (milliseconds, 1e125, negative) cannot keep
a circuit rejecting longer than the configuration allows."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiocircuit import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
)
from aiocircuit.persistence import CircuitRecord, InMemoryPersistence
from aiocircuit.testing import FakeClock

RECOVERY = 30.0
CONFIG = CircuitBreakerConfig(
    failure_threshold=1, success_threshold=1, recovery_timeout=RECOVERY, local_cache_max_age=5
)
# The longest any wait may be: the recovery timeout, a second of the store's whole-second
# rounding and a second of clock error between hosts.
LONGEST_WAIT = RECOVERY + 2


class Downstream:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        return "ok"


async def down() -> None:
    raise ConnectionError("down")


async def attempt(breaker: CircuitBreaker, downstream: Downstream) -> float | None:
    """One call: ``None`` if it ran, else the rejection's ``retry_after``."""
    try:
        await breaker.call(downstream)
    except CircuitBreakerOpenError as exc:
        return exc.retry_after
    return None


@pytest.mark.anyio
@pytest.mark.parametrize("step", [-3600.0, 3600.0], ids=["back-1h", "forward-1h"])
async def test_wall_clock_step_moves_no_local_wait(step: float, clock: FakeClock) -> None:
    """A process trips its circuit, then its wall clock steps an hour either way: it
    still rejects until exactly recovery_timeout has passed on the monotonic clock
    (retry_after counting down from it, never 3599 s), re-reading the store on the way,
    and then probes."""
    breaker = CircuitBreaker("steps", InMemoryPersistence(), config=CONFIG, clock=clock)
    downstream = Downstream()
    with pytest.raises(ConnectionError):
        await breaker.call(down)
    clock.advance(10)
    clock.step_wall(step)
    assert await attempt(breaker, downstream) == pytest.approx(20)
    clock.advance(7)  # past local_cache_max_age: the same record is read again
    assert await attempt(breaker, downstream) == pytest.approx(13)
    clock.advance(12.5)
    assert await attempt(breaker, downstream) == pytest.approx(0.5)
    clock.advance(0.5)
    assert await attempt(breaker, downstream) is None  # the probe, at 30 s
    assert downstream.calls == 1
    assert breaker.state is CircuitState.CLOSED


@settings(max_examples=200, deadline=None)
@given(
    step=st.floats(-1e7, 1e7),
    step_at=st.floats(0, RECOVERY),
    probe_at=st.floats(0, 2 * RECOVERY),
)
def test_any_wall_clock_step_keeps_the_probe_on_time(
    step: float, step_at: float, probe_at: float
) -> None:
    """Whatever step the wall clock takes, and whenever: a call is rejected (with
    retry_after at most the longest wait) while less than recovery_timeout - 1 s has
    passed since the trip, and runs once recovery_timeout + 1 s has. A step of up to a
    second is taken as it comes (NTP's slew), one beyond as a step and ignored."""

    async def scenario() -> None:
        clock = FakeClock()
        breaker = CircuitBreaker("steps", InMemoryPersistence(), config=CONFIG, clock=clock)
        downstream = Downstream()
        with pytest.raises(ConnectionError):
            await breaker.call(down)
        if step_at <= probe_at:  # a step after the call changes nothing it saw
            clock.advance(step_at)
            clock.step_wall(step)
            clock.advance(probe_at - step_at)
        else:
            clock.advance(probe_at)
        retry_after = await attempt(breaker, downstream)
        if probe_at < RECOVERY - 1:
            assert retry_after is not None
        if probe_at >= RECOVERY + 1:
            assert retry_after is None
        if retry_after is not None:
            assert 0 <= retry_after <= LONGEST_WAIT

    anyio.run(scenario)


ABSURD = st.one_of(
    st.sampled_from([10**125, -(10**12), -1, 0, 1_800_000_000_000, 2**63]),
    st.integers(-(10**15), 10**15),
)


@settings(max_examples=200, deadline=None)
@given(
    state=st.sampled_from([CircuitState.OPEN, CircuitState.HALF_OPEN]),
    opened_at=ABSURD,
    lease_expiry=ABSURD,
)
def test_absurd_stored_times_cannot_keep_a_circuit_rejecting(
    state: CircuitState, opened_at: int, lease_expiry: int
) -> None:
    """A stored record whose times parse but make no sense (milliseconds, 1e125,
    negative, anything): a call is rejected for at most the longest wait, and once that
    has passed a probe reaches the downstream and closes the circuit."""

    async def scenario() -> None:
        clock = FakeClock()
        store = InMemoryPersistence()
        owner = "vanished" if state is CircuitState.HALF_OPEN else None
        lease = lease_expiry if state is CircuitState.HALF_OPEN else None
        store._table._records["absurd"] = CircuitRecord(state, 3, opened_at, owner, lease)
        breaker = CircuitBreaker("absurd", store, config=CONFIG, clock=clock)
        downstream = Downstream()
        retry_after = await attempt(breaker, downstream)
        if retry_after is not None:
            assert 0 <= retry_after <= LONGEST_WAIT
            clock.advance(LONGEST_WAIT)
            assert await attempt(breaker, downstream) is None
        assert downstream.calls == 1
        assert breaker.state is CircuitState.CLOSED
        assert (await breaker.info()).state is CircuitState.CLOSED

    anyio.run(scenario)


@pytest.mark.anyio
async def test_absurd_lease_is_taken_over_by_one_process_only(clock: FakeClock) -> None:
    """Two processes both see a lease whose expiry is absurd (1e125) lapse: the first
    takes it over and probes; the second, fenced on the holder it saw, does not, so
    exactly one probe reaches the downstream."""
    store = InMemoryPersistence()
    record = CircuitRecord(CircuitState.HALF_OPEN, 0, 1, "vanished", 10**125)
    store._table._records["absurd"] = record
    # A cache that outlives the wait, so the second acts on the lease it saw, as a
    # process whose election races the first one's does.
    config = CONFIG.model_copy(update={"local_cache_max_age": 2 * LONGEST_WAIT})
    first, second = (CircuitBreaker("absurd", store, config=config, clock=clock) for _ in range(2))
    downstream = Downstream()
    release = anyio.Event()

    async def slow_probe() -> str:
        downstream.calls += 1
        if downstream.calls == 1:  # the first probe runs until the second has tried
            await release.wait()
        return "ok"

    for breaker in (first, second):
        assert await attempt(breaker, downstream) is not None  # both cache the lease
    clock.advance(LONGEST_WAIT)
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.call, slow_probe)
        await anyio.wait_all_tasks_blocked()
        try:
            with pytest.raises(CircuitBreakerOpenError):
                await second.call(slow_probe)
        finally:
            release.set()
    assert downstream.calls == 1
