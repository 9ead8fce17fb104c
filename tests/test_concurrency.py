"""Many callers at once: one probe per recovery across tasks, threads and breakers
sharing a store; fresh event loops per invocation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from typing import Any

import anyio
import pytest

from aiocircuit import CircuitBreaker, CircuitBreakerConfig, CircuitBreakerOpenError, CircuitState
from aiocircuit.persistence import InMemoryPersistence
from aiocircuit.testing import FakeClock

CONFIG = CircuitBreakerConfig(
    failure_threshold=1, success_threshold=1, recovery_timeout=30, local_cache_max_age=5
)


async def _fail() -> None:
    raise ConnectionError("down")


async def _ok() -> str:
    return "ok"


def _fail_sync() -> None:
    raise ConnectionError("down")


@pytest.mark.anyio
async def test_stampede_of_200_tasks_makes_one_downstream_call(clock: FakeClock) -> None:
    """200 tasks at the moment of recovery: exactly one reaches the downstream; the
    rest are rejected as open while it probes."""
    breaker = CircuitBreaker("stampede", InMemoryPersistence(), config=CONFIG, clock=clock)
    with pytest.raises(ConnectionError):
        await breaker.call(_fail)
    clock.advance(30)
    release = anyio.Event()
    downstream_calls = 0
    rejected = 0

    async def downstream() -> str:
        nonlocal downstream_calls
        downstream_calls += 1
        await release.wait()
        return "ok"

    async def caller() -> None:
        nonlocal rejected
        try:
            await breaker.call(downstream)
        except CircuitBreakerOpenError:
            rejected += 1

    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert downstream_calls == 1
    assert rejected == 199
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.anyio
async def test_fleet_of_breakers_elects_one_probe(clock: FakeClock) -> None:
    """Ten breakers sharing one store (ten 'processes') x 20 tasks each at recovery:
    exactly one downstream call in the whole fleet."""
    store = InMemoryPersistence()
    fleet = [CircuitBreaker("fleet", store, config=CONFIG, clock=clock) for _ in range(10)]
    with pytest.raises(ConnectionError):
        await fleet[0].call(_fail)
    clock.advance(30)
    release = anyio.Event()
    calls = 0

    async def downstream() -> None:
        nonlocal calls
        calls += 1
        await release.wait()

    async def caller(breaker: CircuitBreaker) -> None:
        with contextlib.suppress(CircuitBreakerOpenError):
            await breaker.call(downstream)

    async with anyio.create_task_group() as tg:
        for breaker in fleet:
            for _ in range(20):
                tg.start_soon(caller, breaker)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert calls == 1


@pytest.mark.anyio
async def test_second_environment_rejects_after_first_trips(clock: FakeClock) -> None:
    """Two breakers on one store: once one trips, the other rejects within
    local_cache_max_age without running its call."""
    store = InMemoryPersistence()
    first = CircuitBreaker("shared", store, config=CONFIG, clock=clock)
    second = CircuitBreaker("shared", store, config=CONFIG, clock=clock)
    calls = 0

    async def downstream() -> None:
        nonlocal calls
        calls += 1

    await second.call(downstream)  # caches CLOSED
    with pytest.raises(ConnectionError):
        await first.call(_fail)
    clock.advance(5)
    with pytest.raises(CircuitBreakerOpenError):
        await second.call(downstream)
    assert calls == 1


def _trip_sync(breaker: CircuitBreaker) -> None:
    protected = breaker(_fail_sync)
    with pytest.raises(ConnectionError):
        protected()


def _stampede_threads(breaker: CircuitBreaker, threads: int) -> tuple[int, int]:
    barrier = threading.Barrier(threads)
    lock = threading.Lock()
    calls = rejected = 0
    entered = threading.Event()

    @breaker
    def downstream() -> str:
        nonlocal calls
        with lock:
            calls += 1
        entered.set()
        barrier.wait()  # every thread has made its attempt before the probe ends
        return "ok"

    def worker() -> None:
        nonlocal rejected
        try:
            downstream()
        except CircuitBreakerOpenError:
            with lock:
                rejected += 1
            barrier.wait()
        except threading.BrokenBarrierError:
            pass

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=30)
    return calls, rejected


def test_eight_threads_through_sync_shim_make_one_probe(clock: FakeClock) -> None:
    """Eight threads through the sync shim at recovery: exactly one probe runs."""
    breaker = CircuitBreaker("threads", InMemoryPersistence(), config=CONFIG, clock=clock)
    _trip_sync(breaker)
    clock.advance(30)
    assert _stampede_threads(breaker, 8) == (1, 7)
    assert breaker.state is CircuitState.CLOSED


def test_eight_threads_through_the_portal_make_one_probe(clock: FakeClock) -> None:
    """The same with an async-only store, which the sync shim reaches via its portal."""
    from .stores import InstrumentedStore

    breaker = CircuitBreaker("threads", InstrumentedStore(), config=CONFIG, clock=clock)
    _trip_sync(breaker)
    clock.advance(30)
    assert _stampede_threads(breaker, 8) == (1, 7)
    assert breaker.state is CircuitState.CLOSED


def test_fresh_event_loop_per_invocation() -> None:
    """One breaker used from a new asyncio loop per invocation (asyncio.run per Lambda
    invocation) keeps its state across loops."""
    clock = FakeClock()
    breaker = CircuitBreaker("lambda", InMemoryPersistence(), config=CONFIG, clock=clock)

    async def handler(fail: bool) -> Any:
        if fail:
            return await breaker.call(_fail)
        return await breaker.call(asyncio.sleep, 0, "ok")

    assert asyncio.run(handler(False)) == "ok"
    clock.advance(5)
    with pytest.raises(ConnectionError):
        asyncio.run(handler(True))
    with pytest.raises(CircuitBreakerOpenError):
        asyncio.run(handler(False))
    clock.advance(30)
    assert asyncio.run(handler(False)) == "ok"
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_does_not_inherit_the_lease(clock: FakeClock) -> None:
    """A process forked while its parent holds the probe lease (and runs the shim's
    portal) starts without either: it does not probe under the parent's lease, and its
    own shim works through a portal of its own."""
    from .stores import InstrumentedStore

    breaker = CircuitBreaker("fork", InstrumentedStore(), config=CONFIG, clock=clock)
    _trip_sync(breaker)  # through the portal: the parent's portal thread is running
    clock.advance(30)
    read_end, write_end = os.pipe()
    with breaker:  # the parent is mid-probe, holding the lease
        pid = os.fork()
        if pid == 0:  # the child: report, then leave without running parent cleanups
            verdict = b"probed under the parent's lease"
            try:
                with breaker:
                    pass
            except CircuitBreakerOpenError:
                verdict = b"rejected"
            except BaseException as exc:
                verdict = repr(exc).encode()
            os.write(write_end, verdict)
            os._exit(0)
        os.close(write_end)
        _, status = os.waitpid(pid, 0)
        child_said = os.read(read_end, 200)
        os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_said == b"rejected"
    assert breaker.state is CircuitState.CLOSED  # the parent's probe closed it


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_writes_although_a_parent_thread_held_the_store_lock() -> None:
    """A process forked while another thread of its parent is inside an in-memory store
    write (holding its lock) can write to that store: the child's first trip does not
    hang on a lock no thread of its own will release."""
    store = InMemoryPersistence()
    breaker = CircuitBreaker("fork", store, config=CONFIG)
    holding, release = threading.Event(), threading.Event()

    def writer_thread() -> None:
        with store._table._lock:  # a write in progress at the moment of the fork
            holding.set()
            release.wait()

    thread = threading.Thread(target=writer_thread)
    thread.start()
    holding.wait()
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # the child: trip the circuit, report, leave without cleanups
            signal.alarm(5)  # a hang would otherwise hold the test run forever
            verdict = b"no trip"
            try:
                with contextlib.suppress(ConnectionError), breaker:
                    raise ConnectionError("down")
                if breaker.state is CircuitState.OPEN:
                    verdict = b"tripped"
            except BaseException as exc:
                verdict = repr(exc).encode()
            os.write(write_end, verdict)
            os._exit(0)
        os.close(write_end)
        _, status = os.waitpid(pid, 0)
        child_said = os.read(read_end, 200)
        os.close(read_end)
    finally:
        release.set()
        thread.join()
    assert os.waitstatus_to_exitcode(status) == 0, "the child hung (killed by SIGALRM)"
    assert child_said == b"tripped"
    assert breaker.state is CircuitState.CLOSED  # the child's trip stayed in the child


@pytest.mark.anyio
async def test_running_probe_always_has_a_full_lease() -> None:
    """A probe that starts just before its holder's lease would run out renews it first,
    so no other environment can take over while it runs (for up to recovery_timeout)."""
    clock = FakeClock(wall_start=1000.0)
    config = CircuitBreakerConfig(
        failure_threshold=1, success_threshold=3, recovery_timeout=1, local_cache_max_age=0
    )
    store = InMemoryPersistence()
    a = CircuitBreaker("lease", store, config=config, clock=clock)
    b = CircuitBreaker("lease", store, config=config, clock=clock)
    with pytest.raises(ConnectionError):
        await a.call(_fail)
    clock.advance(1.0)
    await a.call(_ok)  # probe 1: takes the lease
    clock.advance(0.99)
    await a.call(_ok)  # probe 2, at wall 1001.99
    clock.advance(0.005)
    release = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.call, release.wait)  # probe 3 starts at 1001.995 and hangs
        await anyio.wait_all_tasks_blocked()
        for step in (0.005, 0.99):  # walls 1002.0 and 1002.99
            clock.advance(step)
            with pytest.raises(CircuitBreakerOpenError):
                await b.call(_ok)
        release.set()
    assert a.state is CircuitState.CLOSED


@pytest.mark.anyio
async def test_late_read_does_not_roll_back_a_newer_write(clock: FakeClock) -> None:
    """A read answer that arrives after this process's own write answer (the probe
    closed the circuit) is older than it and is dropped: calls are admitted."""
    from .stores import InstrumentedStore

    store = InstrumentedStore()
    breaker = CircuitBreaker("late", store, config=CONFIG, clock=clock)
    with pytest.raises(ConnectionError):
        await breaker.call(_fail)
    clock.advance(30)
    probe_may_finish = anyio.Event()

    async def probe() -> str:
        await probe_may_finish.wait()
        return "ok"

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call, probe)  # elected; holds the lease while it runs
        await anyio.wait_all_tasks_blocked()
        clock.advance(5)  # the cache is stale: the next call reads the store
        store.late_answer = anyio.Event()
        tg.start_soon(_call_ignoring_rejection, breaker)  # reads HALF_OPEN, answer held
        await anyio.wait_all_tasks_blocked()
        probe_may_finish.set()  # the probe succeeds: CLOSE wins
        await anyio.wait_all_tasks_blocked()
        assert breaker.state is CircuitState.CLOSED
        store.late_answer.set()  # the stale HALF_OPEN answer arrives
    store.late_answer = None
    assert breaker.state is CircuitState.CLOSED
    assert await breaker.call(_ok) == "ok"


async def _call_ignoring_rejection(breaker: CircuitBreaker) -> None:
    with contextlib.suppress(CircuitBreakerOpenError):
        await breaker.call(_ok)
