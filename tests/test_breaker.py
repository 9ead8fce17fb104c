"""Behaviour of the async breaker on one circuit: trip, reject, probe, recover, and the
rules about what counts as a failure."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from aiocircuit import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitInfo,
    CircuitState,
    CircuitTransition,
    circuit_breaker,
)
from aiocircuit.persistence import InMemoryPersistence
from aiocircuit.testing import FakeClock

from .stores import InstrumentedStore

pytestmark = pytest.mark.anyio


def state_of(breaker: CircuitBreaker) -> CircuitState:
    """``breaker.state``, read through a call: after ``assert breaker.state is X``, mypy
    takes ``breaker.state`` to stay X, even across the calls that change it."""
    return breaker.state


FAST = CircuitBreakerConfig(
    failure_threshold=3, success_threshold=2, recovery_timeout=10, local_cache_max_age=1
)


class Downstream:
    """A downstream that succeeds or raises on demand and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: BaseException | None = None

    async def __call__(self, value: Any = "ok") -> Any:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return value


def make(
    clock: FakeClock, store: Any = None, config: CircuitBreakerConfig = FAST, **kwargs: Any
) -> CircuitBreaker:
    return CircuitBreaker(
        "payments", store or InMemoryPersistence(), config=config, clock=clock, **kwargs
    )


async def trip(breaker: CircuitBreaker, downstream: Downstream, times: int = 3) -> None:
    downstream.error = ConnectionError("down")
    for _ in range(times):
        with pytest.raises(ConnectionError):
            await breaker.call(downstream)
    downstream.error = None


async def test_healthy_circuit_reads_once_per_cache_age(clock: FakeClock) -> None:
    """Closed and healthy: no writes, one store read per local_cache_max_age."""
    store = InstrumentedStore()
    breaker = make(clock, store)
    downstream = Downstream()
    for _ in range(100):
        assert await breaker.call(downstream, 7) == 7
    assert store.calls == {"read": 1}
    clock.advance(1.0)
    for _ in range(100):
        await breaker.call(downstream)
    assert store.calls == {"read": 2}
    assert downstream.calls == 200


async def test_concurrent_callers_share_one_read(clock: FakeClock) -> None:
    """A stale cache is refreshed by one read that concurrent callers wait on."""
    store = InstrumentedStore()
    store.gate = anyio.Event()
    breaker = make(clock, store)
    downstream = Downstream()
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(breaker.call, downstream)
        await anyio.wait_all_tasks_blocked()
        assert store.calls["read"] == 1
        store.gate.set()
    assert downstream.calls == 50
    assert store.calls == {"read": 1}


async def test_threshold_failure_trips_and_raises_original(clock: FakeClock) -> None:
    """The failure that reaches the threshold opens the circuit (one conditional write)
    and its caller still gets the downstream's own exception."""
    store = InstrumentedStore()
    events: list[CircuitTransition] = []
    breaker = make(clock, store, on_transition=events.append)
    downstream = Downstream()
    await trip(breaker, downstream, times=2)
    assert breaker.state is CircuitState.CLOSED
    assert store.writes == 0
    downstream.error = ConnectionError("still down")
    with pytest.raises(ConnectionError, match="still down"):
        await breaker.call(downstream)
    assert state_of(breaker) is CircuitState.OPEN
    assert store.calls["trip"] == 1
    assert events == [
        CircuitTransition("payments", CircuitState.CLOSED, CircuitState.OPEN, 1_800_000_000)
    ]
    info = await breaker.info()
    assert info == CircuitInfo("payments", CircuitState.OPEN, 3, 1_800_000_000, 10.0, 1_800_000_010)


async def test_success_resets_the_streak(clock: FakeClock) -> None:
    """Failures must be consecutive: a success in between starts the count again."""
    breaker = make(clock)
    downstream = Downstream()
    for _ in range(5):
        await trip(breaker, downstream, times=2)
        await breaker.call(downstream)
    assert breaker.state is CircuitState.CLOSED


async def test_open_circuit_rejects_without_running(clock: FakeClock) -> None:
    """An open circuit raises CircuitBreakerOpenError with the circuit and retry_after,
    and never calls the downstream."""
    breaker = make(clock)
    downstream = Downstream()
    await trip(breaker, downstream)
    clock.advance(4)
    with pytest.raises(CircuitBreakerOpenError) as caught:
        await breaker.call(downstream)
    assert downstream.calls == 3
    assert caught.value.circuit == CircuitInfo(
        "payments", CircuitState.OPEN, 3, 1_800_000_000, 10.0, 1_800_000_010
    )
    assert caught.value.retry_after == pytest.approx(6)
    assert "payments" in str(caught.value)


@pytest.mark.parametrize("flavour", ["plain", "async"])
async def test_on_circuit_open_decides_the_result(clock: FakeClock, flavour: str) -> None:
    """on_circuit_open (plain or async) gets the call's arguments plus circuit=, and its
    return value is the call's result."""
    seen: list[tuple[Any, ...]] = []

    def plain(order: str, *, priority: int, circuit: CircuitInfo) -> str:
        seen.append((order, priority, circuit.state))
        return f"queued {order}"

    async def asynchronous(order: str, *, priority: int, circuit: CircuitInfo) -> str:
        await anyio.lowlevel.checkpoint()
        return plain(order, priority=priority, circuit=circuit)

    fallback = plain if flavour == "plain" else asynchronous
    breaker = make(clock, on_circuit_open=fallback)
    downstream = Downstream()
    await trip(breaker, downstream)

    async def send(order: str, *, priority: int) -> str:
        answer: str = await downstream(order)
        return answer

    assert await breaker.call(send, "o-1", priority=2) == "queued o-1"
    assert seen == [("o-1", 2, CircuitState.OPEN)]


async def test_on_circuit_open_error_propagates(clock: FakeClock) -> None:
    """An exception raised by on_circuit_open reaches the caller."""

    def fallback(*, circuit: CircuitInfo) -> None:
        raise LookupError("no fallback")

    breaker = make(clock, on_circuit_open=fallback)
    downstream = Downstream()
    await trip(breaker, downstream)
    with pytest.raises(LookupError, match="no fallback"):
        await breaker.call(downstream)


async def test_full_recovery_cycle(clock: FakeClock) -> None:
    """After recovery_timeout a probe runs; success_threshold successes close the
    circuit; transitions fire once each, in order."""
    events: list[CircuitTransition] = []
    store = InstrumentedStore()
    breaker = make(clock, store, on_transition=events.append)
    downstream = Downstream()
    await trip(breaker, downstream)
    clock.advance(10)
    assert await breaker.call(downstream, "probe-1") == "probe-1"
    assert breaker.state is CircuitState.HALF_OPEN
    assert await breaker.call(downstream, "probe-2") == "probe-2"
    assert state_of(breaker) is CircuitState.CLOSED
    assert [(e.from_state, e.to_state) for e in events] == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]
    assert events[1].opened_at == 1_800_000_000
    assert events[2].opened_at is None
    assert store.calls["acquire_probe"] == 1
    assert store.calls["renew_probe"] == 1  # the lease is renewed on each probe success
    assert store.calls["close"] == 1


async def test_probe_failure_reopens_with_fresh_opened_at(clock: FakeClock) -> None:
    """One failed probe reopens the circuit and restarts the recovery timeout."""
    events: list[CircuitTransition] = []
    breaker = make(clock, on_transition=events.append)
    downstream = Downstream()
    await trip(breaker, downstream)
    clock.advance(12)
    downstream.error = TimeoutError("slow")
    with pytest.raises(TimeoutError):
        await breaker.call(downstream)
    assert breaker.state is CircuitState.OPEN
    assert events[-1] == CircuitTransition(
        "payments", CircuitState.HALF_OPEN, CircuitState.OPEN, 1_800_000_012
    )
    downstream.error = None
    clock.advance(9)
    with pytest.raises(CircuitBreakerOpenError):
        await breaker.call(downstream)
    clock.advance(1)
    await breaker.call(downstream)
    assert state_of(breaker) is CircuitState.HALF_OPEN


async def test_vanished_lease_holder_is_taken_over(clock: FakeClock) -> None:
    """A lease whose holder never reports back expires after recovery_timeout and
    another breaker takes it over."""
    shared = InMemoryPersistence()
    holder, other = make(clock, shared), make(clock, shared)
    downstream = Downstream()
    await trip(holder, downstream)
    clock.advance(10)
    hanging = anyio.Event()

    async def hang() -> None:
        await hanging.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder.call, hang)  # wins the lease, then never finishes
        await anyio.wait_all_tasks_blocked()
        clock.advance(1)
        with pytest.raises(CircuitBreakerOpenError) as caught:
            await other.call(downstream)
        assert caught.value.circuit.state is CircuitState.HALF_OPEN
        clock.advance(9)
        assert await other.call(downstream, "took over") == "took over"
        hanging.set()
    # The old holder's late success changes nothing: the new owner's lease stands, and
    # the old holder's next call is rejected rather than probing under a lost lease.
    record = await shared.read("payments")
    assert record is not None
    assert record.lease_expiry == 1_800_000_030  # taken over at +20 for recovery_timeout
    assert record.probe_owner == other._machine.lease_owner
    with pytest.raises(CircuitBreakerOpenError):
        await holder.call(downstream)
    assert holder._machine.lease_owner is None


async def test_handled_exceptions_allowlist(clock: FakeClock) -> None:
    """With handled_exceptions, only those types count as failures."""
    config = FAST.model_copy(update={"handled_exceptions": (ConnectionError,)})
    breaker = make(clock, config=config)
    downstream = Downstream()
    downstream.error = KeyError("not counted")
    for _ in range(5):
        with pytest.raises(KeyError):
            await breaker.call(downstream)
    assert breaker.state is CircuitState.CLOSED
    await trip(breaker, downstream)
    assert state_of(breaker) is CircuitState.OPEN


async def test_ignored_exceptions_denylist(clock: FakeClock) -> None:
    """With ignored_exceptions, those types never count; all other Exceptions do."""
    breaker = make(clock, config=CircuitBreakerConfig(ignored_exceptions=KeyError))
    downstream = Downstream()
    downstream.error = KeyError("ignored")
    for _ in range(10):
        with pytest.raises(KeyError):
            await breaker.call(downstream)
    assert breaker.state is CircuitState.CLOSED


async def test_ignored_probe_releases_the_lease(clock: FakeClock) -> None:
    """An ignored exception during a probe releases the lease: the next call probes."""
    breaker = make(clock, config=FAST.model_copy(update={"ignored_exceptions": (KeyError,)}))
    downstream = Downstream()
    await trip(breaker, downstream)
    clock.advance(10)
    downstream.error = KeyError("ignored")
    with pytest.raises(KeyError):
        await breaker.call(downstream)
    assert breaker.state is CircuitState.HALF_OPEN
    downstream.error = None
    assert await breaker.call(downstream, "next probe") == "next probe"


async def test_cancellation_never_counts(clock: FakeClock) -> None:
    """A cancelled call is neither a failure nor a success."""
    breaker = make(clock, config=CircuitBreakerConfig(failure_threshold=1))
    for _ in range(3):
        with anyio.move_on_after(0):
            await breaker.call(anyio.sleep_forever)
    assert breaker.state is CircuitState.CLOSED


async def test_cancelled_probe_lets_next_caller_probe(clock: FakeClock) -> None:
    """A probe cancelled mid-call releases its lease at once (shielded from the
    cancellation): the very next caller probes without waiting for the lease."""
    store = InstrumentedStore()
    breaker = make(clock, store)
    downstream = Downstream()
    await trip(breaker, downstream)
    clock.advance(10)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await breaker.call(anyio.sleep_forever)
    assert store.calls["renew_probe"] == 1  # the release
    assert await breaker.call(downstream, "probe") == "probe"
    assert store.calls["acquire_probe"] == 2


async def test_failing_on_transition_is_logged_and_swallowed(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in on_transition is logged on the aiocircuit logger and never
    replaces the call's own outcome."""

    async def broken(transition: CircuitTransition) -> None:
        raise RuntimeError("metrics backend down")

    breaker = make(clock, on_transition=broken)
    downstream = Downstream()
    with caplog.at_level(logging.WARNING, logger="aiocircuit"):
        await trip(breaker, downstream)
    assert breaker.state is CircuitState.OPEN
    assert any("on_transition" in r.getMessage() for r in caplog.records)


async def test_call_timeout_cancels_and_counts(clock: FakeClock) -> None:
    """A call running past call_timeout is cancelled, raises TimeoutError, and counts as
    a failure even with an allowlist that does not name TimeoutError."""
    config = CircuitBreakerConfig(
        failure_threshold=1, call_timeout=0.01, handled_exceptions=ConnectionError
    )
    breaker = make(clock, config=config)
    with pytest.raises(TimeoutError, match="call_timeout"):
        await breaker.call(anyio.sleep_forever)
    assert breaker.state is CircuitState.OPEN


async def test_call_timeout_spares_fast_calls(clock: FakeClock) -> None:
    """Calls finishing within call_timeout return normally."""
    breaker = make(clock, config=CircuitBreakerConfig(call_timeout=5))
    downstream = Downstream()
    assert await breaker.call(downstream, 3) == 3


async def test_async_with_records_outcomes(clock: FakeClock) -> None:
    """`async with breaker:` admits, records the block's outcome, and raises the open
    error on entry when the circuit is open."""
    breaker = make(clock)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            async with breaker:
                raise ConnectionError("down")
    assert breaker.state is CircuitState.OPEN
    ran = False
    with pytest.raises(CircuitBreakerOpenError):
        async with breaker:
            ran = True
    assert not ran
    clock.advance(10)
    for _ in range(2):
        async with breaker:
            pass
    assert state_of(breaker) is CircuitState.CLOSED


async def test_async_with_under_call_timeout(clock: FakeClock) -> None:
    """An `async with` block running past call_timeout is cancelled and raises
    TimeoutError, which counts as a failure."""
    breaker = make(clock, config=CircuitBreakerConfig(failure_threshold=1, call_timeout=0.01))
    with pytest.raises(TimeoutError):
        async with breaker:
            await anyio.sleep_forever()
    assert breaker.state is CircuitState.OPEN


async def test_async_with_under_call_timeout_lets_healthy_blocks_succeed(
    clock: FakeClock,
) -> None:
    """`async with` blocks that finish within call_timeout succeed and count as
    successes on every backend: trio's cancel scopes say they swallowed an exception
    even when none passed, which must not read as a timeout."""
    events: list[CircuitTransition] = []
    breaker = make(
        clock,
        config=CircuitBreakerConfig(failure_threshold=1, call_timeout=5),
        on_transition=events.append,
    )
    for _ in range(3):
        async with breaker:
            await anyio.lowlevel.checkpoint()
    assert breaker.state is CircuitState.CLOSED
    assert events == []


async def test_decorator_protects_what_returns_a_coroutine(clock: FakeClock) -> None:
    """A functools.partial of an async def and an object with an async __call__ are
    protected natively: their failures count and trip the circuit."""
    downstream = Downstream()
    downstream.error = ConnectionError("down")

    class Client:
        async def __call__(self) -> Any:
            return await downstream()

    for target in (functools.partial(downstream, "x"), Client()):
        breaker = make(clock, config=CircuitBreakerConfig(failure_threshold=2))
        protected = breaker(target)
        assert inspect.iscoroutinefunction(protected)
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await protected()
        assert breaker.state is CircuitState.OPEN, target


async def test_plain_wrapper_returning_a_coroutine_raises_type_error(clock: FakeClock) -> None:
    """A plain def that returns a coroutine cannot be told apart at decoration: its
    call raises TypeError naming the fix, counts for nothing, and leaves no coroutine
    un-awaited (pytest turns that warning into an error)."""
    breaker = make(clock, config=CircuitBreakerConfig(failure_threshold=1))
    downstream = Downstream()

    @breaker
    def wrapper() -> Awaitable[Any]:
        return downstream()

    for _ in range(2):
        with pytest.raises(TypeError, match="async def"):
            wrapper()
    assert downstream.calls == 0
    assert breaker.state is CircuitState.CLOSED


async def test_call_refuses_a_plain_function_without_counting(clock: FakeClock) -> None:
    """`await breaker.call(plain_function)` raises TypeError and never counts, on the
    closed fast path and as a probe (whose lease it gives back at once)."""
    breaker = make(clock)

    def blocking() -> str:
        return "ran"

    assert FAST.failure_threshold is not None
    for _ in range(FAST.failure_threshold):
        with pytest.raises(TypeError, match="returns an awaitable"):
            await breaker.call(blocking)  # type: ignore[arg-type]
    assert breaker.state is CircuitState.CLOSED
    downstream = Downstream()
    await trip(breaker, downstream)
    clock.advance(FAST.recovery_timeout)
    with pytest.raises(TypeError, match="returns an awaitable"):
        await breaker.call(blocking)  # type: ignore[arg-type]
    before = downstream.calls
    assert await breaker.call(downstream) == "ok"  # the lease was given back: it probes
    assert downstream.calls == before + 1


async def test_arguments_that_do_not_bind_never_count(clock: FakeClock) -> None:
    """A TypeError from arguments that do not bind is a programming error, not the
    downstream failing: it propagates and counts for nothing, through call() and the
    decorator, closed or probing."""
    config = CircuitBreakerConfig(failure_threshold=1, success_threshold=1, recovery_timeout=10)
    breaker = make(clock, config=config)

    async def fetch(order: str) -> str:
        return order

    protected = breaker(fetch)
    with pytest.raises(TypeError):
        await breaker.call(fetch, 1, 2)  # type: ignore[call-arg, arg-type]
    with pytest.raises(TypeError):
        await protected(unknown=1)  # type: ignore[call-arg]
    assert breaker.state is CircuitState.CLOSED
    await trip(breaker, Downstream(), times=1)
    clock.advance(config.recovery_timeout)
    with pytest.raises(TypeError):
        await protected(1, 2)  # type: ignore[call-arg, arg-type]
    assert await protected("o-1") == "o-1"  # the probe runs at once: nothing held
    assert breaker.state is CircuitState.CLOSED


async def test_decorator_keeps_identity(clock: FakeClock) -> None:
    """@breaker on an async def protects it and keeps its name and docstring."""
    breaker = make(clock)

    @breaker
    async def fetch(x: int) -> int:
        """Fetch x."""
        return x + 1

    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch x."
    assert await fetch(1) == 2


async def test_circuit_breaker_factory(clock: FakeClock) -> None:
    """circuit_breaker() takes Powertools' parameters and protects async and sync
    functions with one shared circuit."""
    store = InMemoryPersistence()
    events: list[CircuitTransition] = []
    decorate = circuit_breaker(
        "orders",
        store,
        on_circuit_open=lambda *a, circuit, **k: "fallback",
        on_transition=events.append,
        config=CircuitBreakerConfig(failure_threshold=1),
    )

    @decorate
    async def fails() -> str:
        raise ConnectionError

    @decorate
    def sync_call() -> str:
        return "ran"

    with pytest.raises(ConnectionError):
        await fails()
    assert await fails() == "fallback"
    assert sync_call() == "fallback"
    assert [e.to_state for e in events] == [CircuitState.OPEN]


async def test_generator_functions_are_refused(clock: FakeClock) -> None:
    """A generator function cannot be protected; the decorator says so at once."""
    breaker = make(clock)

    async def agen() -> Any:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        breaker(agen)


async def test_kill_switch(clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    """AIOCIRCUIT_DISABLED=1 makes a breaker a pass-through, with one warning."""
    store = InMemoryPersistence()
    breaker = make(clock, store)
    downstream = Downstream()
    await trip(breaker, downstream)
    monkeypatch.setenv("AIOCIRCUIT_DISABLED", "1")
    with caplog.at_level(logging.WARNING, logger="aiocircuit"):
        disabled = make(clock, store)
    assert len([r for r in caplog.records if "disabled" in r.getMessage()]) == 1
    assert await disabled.call(downstream, "through") == "through"
    async with disabled:
        pass
    downstream.error = ConnectionError()
    for _ in range(5):
        with pytest.raises(ConnectionError):
            await disabled.call(downstream)
    record = await store.read("payments")
    assert record is not None
    assert (record.state, record.failure_count) == (CircuitState.OPEN, 3)  # untouched


async def test_low_level_fast_path_protocol(clock: FakeClock) -> None:
    """The public low-level API integrations use: fast_admits() is false until the
    circuit is known closed and fresh, true then; fast_failed() counts like a failed
    call (tripping at the threshold), fast_succeeded() resets the streak, and
    result_fails() applies the result predicate."""
    config = CircuitBreakerConfig(failure_threshold=2, result_predicate=lambda r: r == 503)
    breaker = make(clock, config=config)
    assert not breaker.fast_admits()  # nothing read yet
    assert await breaker.call(Downstream()) == "ok"
    assert breaker.fast_admits()
    assert breaker.result_fails(503)
    assert not breaker.result_fails(200)
    await breaker.fast_failed(ConnectionError("down"))
    breaker.fast_succeeded()
    await breaker.fast_failed(None)  # a result counted as a failure
    assert breaker.state is CircuitState.CLOSED  # the success broke the streak
    await breaker.fast_failed(ConnectionError("down"))
    assert state_of(breaker) is CircuitState.OPEN
    assert not breaker.fast_admits()
