"""The trip rules beyond the streak: the failure-rate window, slow calls, growing and
jittered open periods, shadow mode, and sub-second timing. Every async test runs on
asyncio and trio; the sync shim has its own."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from aiocircuit import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitState,
)
from aiocircuit._window import BUCKETS, FailureWindow
from aiocircuit.persistence import InMemoryPersistence
from aiocircuit.testing import FakeClock

pytestmark = pytest.mark.anyio

RATE = CircuitBreakerConfig(
    failure_threshold=None,
    failure_rate_threshold=0.5,
    sliding_window=10,
    minimum_calls=10,
    recovery_timeout=1,
    success_threshold=1,
)


class Flaky:
    """A downstream that fails the calls ``fails`` picks by their index."""

    def __init__(self, fails: Callable[[int], bool]) -> None:
        self.fails = fails
        self.calls = 0

    async def __call__(self) -> str:
        index, self.calls = self.calls, self.calls + 1
        if self.fails(index):
            raise ConnectionError(f"call {index} failed")
        return "ok"

    def sync(self) -> str:
        index, self.calls = self.calls, self.calls + 1
        if self.fails(index):
            raise ConnectionError(f"call {index} failed")
        return "ok"


def state_of(breaker: CircuitBreaker) -> CircuitState:
    """The breaker's state, read afresh (a function, so type checkers do not narrow it)."""
    return breaker.state


async def run(breaker: CircuitBreaker, downstream: Flaky, times: int, clock: FakeClock) -> int:
    """Call ``times`` times, 10 ms apart; return how many were rejected."""
    rejected = 0
    for _ in range(times):
        clock.advance(0.01)
        try:
            await breaker.call(downstream)
        except ConnectionError:
            pass
        except CircuitBreakerOpenError:
            rejected += 1
    return rejected


# -- the window against a brute-force reference -----------------------------------------


class Reference:
    """Every call's time, kept: what the bucketed window must count, computed from
    scratch (a call counts while its bucket is one of the newest BUCKETS)."""

    def __init__(self, seconds: float, rate: float, minimum: int) -> None:
        self.per_second = BUCKETS / seconds
        self.rate, self.minimum = rate, minimum
        self.calls: list[tuple[float, bool]] = []

    def counts(self, now: float) -> tuple[int, int]:
        newest = max(
            [int(now * self.per_second)] + [int(t * self.per_second) for t, _ in self.calls]
        )
        live = [f for t, f in self.calls if int(t * self.per_second) > newest - BUCKETS]
        return len(live), sum(live)

    def trips(self, now: float) -> bool:
        calls, failures = self.counts(now)
        return (
            failures > 0
            and calls >= self.minimum
            and failures >= round(self.rate * 1000) * calls / 1000
        )


@settings(max_examples=300, deadline=None)
@given(
    seconds=st.sampled_from([1.0, 10.0, 60.0]),
    rate=st.sampled_from([0.1, 0.3, 0.5, 0.9, 1.0]),
    minimum=st.integers(1, 30),
    steps=st.lists(
        st.tuples(st.floats(0, 4, allow_nan=False), st.booleans(), st.booleans()), max_size=200
    ),
)
def test_window_matches_a_reference_that_keeps_every_call(
    seconds: float,
    rate: float,
    minimum: int,
    steps: list[tuple[float, bool, bool]],
) -> None:
    """Counts and trip decisions equal the brute-force reference's after every call,
    through both ways of counting (the fast path's count_success and record), and a call
    leaves the window between seconds - one bucket and seconds after it ended."""
    window = FailureWindow(seconds, rate, minimum)
    reference = Reference(seconds, rate, minimum)
    now = 1000.0
    for gap, failed, fast in steps:
        now += gap * seconds / 4
        if fast and not failed:
            counted = window.count_success(now)
            reference.calls.append((now, False))
            if not counted:
                # Only a success that completes a tripping window is handed back.
                assert reference.trips(now)
                assert window.record(now, failed=False)
            else:
                assert not reference.trips(now)
        else:
            tripped = window.record(now, failed=failed)
            reference.calls.append((now, failed))
            assert tripped == reference.trips(now)
        assert (window.calls, window.failures) == reference.counts(now)
        older = [t for t, _ in reference.calls if now - t > seconds]
        newer = [t for t, _ in reference.calls if now - t < seconds - seconds / BUCKETS]
        assert window.calls <= len(reference.calls) - len(older)
        assert window.calls >= len(newer)


def test_window_rate_is_the_rate_as_written() -> None:
    """30 % of 10 calls is 3 failures, though 0.3 * 10 is 3.0000000000000004 in floats."""
    window = FailureWindow(60, 0.3, 10)
    for index in range(9):
        assert not window.record(1000.0, failed=index < 3)
    assert window.record(1000.0, failed=False)


# -- the rate rule on a breaker ---------------------------------------------------------


async def test_partial_outage_trips_the_rate_rule_not_the_streak(clock: FakeClock) -> None:
    """Every other call fails: successes keep resetting the streak, so the streak rule
    never trips; the rate rule trips once minimum_calls calls have ended."""
    alternate = Flaky(lambda i: i % 2 == 0)
    streak = CircuitBreaker(
        "streak", InMemoryPersistence(), config=CircuitBreakerConfig(), clock=clock
    )
    assert await run(streak, alternate, 200, clock) == 0
    assert state_of(streak) is CircuitState.CLOSED

    downstream = Flaky(lambda i: i % 2 == 0)
    rate = CircuitBreaker("rate", InMemoryPersistence(), config=RATE, clock=clock)
    rejected = await run(rate, downstream, 30, clock)
    assert state_of(rate) is CircuitState.OPEN
    assert downstream.calls == RATE.minimum_calls  # tripped at the tenth call
    assert rejected == 30 - RATE.minimum_calls
    info = await rate.info()
    assert info.failure_count == 5  # the failures in the window


async def test_rate_below_threshold_never_trips(clock: FakeClock) -> None:
    """One call in three fails: below 50 %, the circuit stays closed."""
    downstream = Flaky(lambda i: i % 3 == 0)
    breaker = CircuitBreaker("rate", InMemoryPersistence(), config=RATE, clock=clock)
    assert await run(breaker, downstream, 500, clock) == 0
    assert state_of(breaker) is CircuitState.CLOSED


async def test_a_success_that_completes_the_minimum_trips(clock: FakeClock) -> None:
    """Nine failures then a success: the tenth call completes the minimum with 90 %
    failed, and trips, though it succeeded."""
    downstream = Flaky(lambda i: i < 9)
    breaker = CircuitBreaker("rate", InMemoryPersistence(), config=RATE, clock=clock)
    assert await run(breaker, downstream, 10, clock) == 0
    assert state_of(breaker) is CircuitState.OPEN


async def test_failures_leave_the_window(clock: FakeClock) -> None:
    """Failures older than the window no longer count: after a quiet sliding_window,
    the same few failures start from nothing."""
    downstream = Flaky(lambda i: i < 4)
    breaker = CircuitBreaker("rate", InMemoryPersistence(), config=RATE, clock=clock)
    await run(breaker, downstream, 4, clock)
    clock.advance(RATE.sliding_window)
    downstream.fails = lambda i: i % 2 == 1  # 4 successes with them would be 8 of 8 ...
    assert await run(breaker, downstream, 8, clock) == 0
    assert state_of(breaker) is CircuitState.CLOSED  # ... but the window holds only these 8


async def test_a_close_starts_the_window_afresh(clock: FakeClock) -> None:
    """After a recovery, failures from before the trip count for nothing."""
    downstream = Flaky(lambda i: i % 2 == 0)
    breaker = CircuitBreaker("rate", InMemoryPersistence(), config=RATE, clock=clock)
    await run(breaker, downstream, 10, clock)
    assert state_of(breaker) is CircuitState.OPEN
    clock.advance(1)
    downstream.fails = lambda i: False
    assert await breaker.call(downstream) == "ok"  # the probe closes
    assert state_of(breaker) is CircuitState.CLOSED
    downstream.fails = lambda i: True
    assert await run(breaker, downstream, 9, clock) == 0
    assert state_of(breaker) is CircuitState.CLOSED  # 9 calls: below the minimum


async def test_both_rules_trip_whichever_comes_first(clock: FakeClock) -> None:
    """With both rules on, three failures in a row trip the streak before the window
    has its minimum."""
    config = RATE.model_copy(update={"failure_threshold": 3})
    breaker = CircuitBreaker("both", InMemoryPersistence(), config=config, clock=clock)
    downstream = Flaky(lambda i: True)
    await run(breaker, downstream, 5, clock)
    assert downstream.calls == 3


async def test_rate_rule_on_every_call_form(clock: FakeClock) -> None:
    """The decorator and async with count into the window as call() does."""
    downstream = Flaky(lambda i: i % 2 == 0)
    breaker = CircuitBreaker("forms", InMemoryPersistence(), config=RATE, clock=clock)

    @breaker
    async def decorated() -> str:
        return await downstream()

    for index in range(10):
        clock.advance(0.01)
        try:
            if index % 2:
                await decorated()
            else:
                async with breaker:
                    await downstream()
        except ConnectionError:
            pass
    assert state_of(breaker) is CircuitState.OPEN


def test_rate_rule_in_the_sync_shim(clock: FakeClock) -> None:
    """Plain functions and with blocks count into the same window."""
    downstream = Flaky(lambda i: i % 2 == 0)
    breaker = CircuitBreaker("sync", InMemoryPersistence(), config=RATE, clock=clock)
    protected = breaker(downstream.sync)
    for index in range(10):
        clock.advance(0.01)
        try:
            if index % 2:
                protected()
            else:
                with breaker:
                    downstream.sync()
        except ConnectionError:
            pass
    assert state_of(breaker) is CircuitState.OPEN
    with pytest.raises(CircuitBreakerOpenError):
        protected()


# -- slow calls -------------------------------------------------------------------------


async def test_slow_successes_count_as_failures(clock: FakeClock) -> None:
    """A call that succeeds but takes longer than slow_call_duration counts as a
    failure, on every form; its result is still returned."""
    config = CircuitBreakerConfig(failure_threshold=3, slow_call_duration=0.5)
    breaker = CircuitBreaker("slow", InMemoryPersistence(), config=config, clock=clock)

    async def slow() -> str:
        clock.advance(0.6)
        return "late"

    @breaker
    async def decorated() -> str:
        return await slow()

    assert await breaker.call(slow) == "late"
    assert await decorated() == "late"
    assert state_of(breaker) is CircuitState.CLOSED
    async with breaker:
        await slow()
    assert state_of(breaker) is CircuitState.OPEN


async def test_fast_successes_reset_the_streak_of_slow_ones(clock: FakeClock) -> None:
    config = CircuitBreakerConfig(failure_threshold=2, slow_call_duration=0.5)
    breaker = CircuitBreaker("slow", InMemoryPersistence(), config=config, clock=clock)

    async def took(seconds: float) -> None:
        clock.advance(seconds)

    for _ in range(5):
        await breaker.call(took, 0.6)
        await breaker.call(took, 0.4)
    assert state_of(breaker) is CircuitState.CLOSED


def test_slow_calls_in_the_sync_shim(clock: FakeClock) -> None:
    config = CircuitBreakerConfig(failure_threshold=2, slow_call_duration=0.5)
    breaker = CircuitBreaker("slow", InMemoryPersistence(), config=config, clock=clock)

    @breaker
    def slow() -> str:
        clock.advance(0.6)
        return "late"

    assert slow() == "late"
    with breaker:
        clock.advance(0.6)
    assert state_of(breaker) is CircuitState.OPEN


# -- growing, jittered open periods -----------------------------------------------------


async def test_each_failed_probe_grows_the_open_period_up_to_the_cap(clock: FakeClock) -> None:
    """1 s, then 2 s, 4 s, capped at 5 s; a close starts again from 1 s. Another process
    on the store waits the same periods."""
    config = CircuitBreakerConfig(
        failure_threshold=1,
        success_threshold=1,
        recovery_timeout=1,
        recovery_backoff=2,
        max_recovery_timeout=5,
        local_cache_max_age=0,
    )
    store = InMemoryPersistence()
    breaker = CircuitBreaker("grow", store, config=config, clock=clock)
    other = CircuitBreaker("grow", store, config=config, clock=clock)
    downstream = Flaky(lambda i: True)
    periods = []
    await run(breaker, downstream, 1, clock)
    for _ in range(4):
        info = await other.info()
        periods.append(info.open_period)
        assert info.probe_at == info.opened_at + info.open_period  # type: ignore[operator]
        clock.advance(info.open_period - 0.01)  # type: ignore[operator]
        with pytest.raises(CircuitBreakerOpenError) as caught:
            await other.call(downstream)
        assert caught.value.retry_after == pytest.approx(0.01, abs=1e-6)
        clock.advance(0.01)
        with pytest.raises(ConnectionError):
            await other.call(downstream)  # the probe fails: reopened, for longer
    assert periods == [1.0, 2.0, 4.0, 5.0]
    clock.advance(5)
    downstream.fails = lambda i: False
    assert await breaker.call(downstream) == "ok"
    await run(breaker, Flaky(lambda i: True), 1, clock)
    assert (await other.info()).open_period == 1.0


async def test_jitter_is_drawn_once_and_shared(clock: FakeClock) -> None:
    """Each period is drawn within [1 - x, 1 + x] of its nominal length, once: the
    breaker that tripped and another process report the same one."""
    config = CircuitBreakerConfig(
        failure_threshold=1, recovery_timeout=10, recovery_jitter=0.2, local_cache_max_age=0
    )
    drawn = set()
    for attempt in range(20):
        store = InMemoryPersistence()
        breaker = CircuitBreaker(f"jitter-{attempt}", store, config=config, clock=clock)
        other = CircuitBreaker(f"jitter-{attempt}", store, config=config, clock=clock)
        await run(breaker, Flaky(lambda i: True), 1, clock)
        period = (await breaker.info()).open_period
        assert period is not None
        assert 8.0 <= period <= 12.0
        assert (await other.info()).open_period == period
        drawn.add(period)
    assert len(drawn) > 1


def test_absurd_stored_periods_are_bounded() -> None:
    """A stored period that is not a positive number reads as recovery_timeout; one
    longer than the configuration can draw is cut to the longest it can."""
    from aiocircuit._state import CircuitStateMachine
    from aiocircuit.persistence import CircuitRecord

    def machine(**kwargs: Any) -> CircuitStateMachine:
        return CircuitStateMachine(
            "m",
            failure_threshold=1,
            success_threshold=1,
            recovery_timeout=10,
            cache_max_age=5,
            new_owner_id=lambda: "x",
            **kwargs,
        )

    for period, expected, kwargs in [
        (None, 10.0, {}),
        (-1.0, 10.0, {}),
        (float("nan"), 10.0, {}),
        (1e125, 10.0, {}),
        (1e125, 12.0, {"recovery_jitter": 0.2}),
        (1e125, 60.0, {"recovery_backoff": 2.0, "max_recovery_timeout": 60.0}),
        (3.0, 3.0, {}),
    ]:
        m = machine(**kwargs)
        m.on_read(CircuitRecord(CircuitState.OPEN, 1, 1e9, open_period=period), 0.0)
        assert m.info(0.0, 1e9).open_period == expected, (period, kwargs)


# -- shadow mode ------------------------------------------------------------------------


async def test_shadow_mode_trips_in_the_store_but_never_rejects(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """enforce=False: the circuit trips, elects a probe and closes as usual, other
    breakers on the store obey it, but this one runs every call, uncounted while it
    would have rejected, and logs would_reject."""
    store = InMemoryPersistence()
    config = CircuitBreakerConfig(
        failure_threshold=2, success_threshold=1, recovery_timeout=5, enforce=False
    )
    shadow = CircuitBreaker("shadow", store, config=config, clock=clock)
    enforcing = CircuitBreaker(
        "shadow", store, config=config.model_copy(update={"enforce": True}), clock=clock
    )
    downstream = Flaky(lambda i: True)
    with caplog.at_level(logging.DEBUG, logger="aiocircuit"):
        await run(shadow, downstream, 10, clock)
    assert downstream.calls == 10  # nothing rejected
    assert state_of(shadow) is CircuitState.OPEN  # but it tripped, for everyone
    assert any("would_reject" in r.getMessage() for r in caplog.records)
    with pytest.raises(CircuitBreakerOpenError):
        await enforcing.call(downstream)
    info = await shadow.info()
    assert info.state is CircuitState.OPEN
    assert info.opened_at == pytest.approx(clock.time() - 0.08)  # not re-tripped since
    clock.advance(5)
    downstream.fails = lambda i: False
    assert await shadow.call(downstream) == "ok"  # elected, probes, closes
    assert state_of(shadow) is CircuitState.CLOSED


async def test_shadow_mode_with_blocks_do_not_count(clock: FakeClock) -> None:
    """A with block the circuit would have rejected runs, and its failure counts for
    nothing (it does not re-trip)."""
    store = InMemoryPersistence()
    config = CircuitBreakerConfig(failure_threshold=1, recovery_timeout=5, enforce=False)
    shadow = CircuitBreaker("shadow", store, config=config, clock=clock)
    await run(shadow, Flaky(lambda i: True), 1, clock)
    opened_at = (await shadow.info()).opened_at
    clock.advance(1)
    with pytest.raises(ConnectionError):
        async with shadow:
            raise ConnectionError("runs anyway")
    assert (await shadow.info()).opened_at == opened_at


# -- sub-second timing ------------------------------------------------------------------


@pytest.mark.parametrize("period", [0.01, 0.05, 0.25, 1.5])
async def test_probe_starts_exactly_at_the_end_of_a_sub_second_period(
    clock: FakeClock, period: float
) -> None:
    """No probe before the open period has passed, to the millisecond; one as soon as
    it has; retry_after says how long is left."""
    config = CircuitBreakerConfig(failure_threshold=1, success_threshold=1, recovery_timeout=period)
    breaker = CircuitBreaker("quick", InMemoryPersistence(), config=config, clock=clock)
    downstream = Flaky(lambda i: i == 0)
    await run(breaker, downstream, 1, clock)
    tripped = clock.time()
    clock.advance(period - 0.001)
    with pytest.raises(CircuitBreakerOpenError) as caught:
        await breaker.call(downstream)
    assert caught.value.retry_after == pytest.approx(0.001, abs=1e-6)
    assert caught.value.circuit.probe_at == pytest.approx(tripped + period)
    clock.advance(0.001)
    assert await breaker.call(downstream) == "ok"
    assert state_of(breaker) is CircuitState.CLOSED


def test_jittered_periods_use_the_injected_draw() -> None:
    """The draw is uniform over [1 - x, 1 + x] of the nominal period (here pinned)."""
    from aiocircuit._state import CircuitStateMachine

    seen: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        seen.append((low, high))
        return high

    m = CircuitStateMachine(
        "m",
        failure_threshold=1,
        success_threshold=1,
        recovery_timeout=10,
        cache_max_age=5,
        new_owner_id=lambda: "x",
        recovery_jitter=0.25,
        recovery_backoff=3,
        uniform=uniform,
    )
    assert m.draw_open_period(0) == 12.5
    assert m.draw_open_period(2) == 112.5
    assert seen == [(0.75, 1.25)] * 2
    assert random.Random(1).uniform(0.75, 1.25) != 1.25  # the default draw is random
