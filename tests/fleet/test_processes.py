"""A fleet of real OS processes on one DynamoDB table: at each moment of recovery exactly
one call in the whole fleet reaches the downstream.

Each of 20 spawned processes runs its own DynamoDBPersistence and CircuitBreaker, with
20 tasks calling through it, against the single-threaded moto server (moto's threaded
server does not make racing conditional writes atomic; real DynamoDB does). Time is
shared, not slept: every breaker reads a clock backed by one ``multiprocessing.Value``
that only the parent moves, and rounds are paced by barriers. The probe is held until
every caller of the fleet has made its attempt, so "exactly one" means exactly one.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from aiocircuit import CircuitBreaker, CircuitBreakerConfig, CircuitBreakerOpenError, CircuitState
from aiocircuit.persistence.dynamodb import DynamoDBPersistence

PROCESSES = 20
TASKS = 20
CALLERS = PROCESSES * TASKS
RECOVERY = 10
CACHE_AGE = 1
SUCCESSES = 3
CIRCUIT = "fleet"
WALL_START = 1_800_000_000.0
MONOTONIC_START = 1_000.0

# Per round: what a call reaching the downstream does, and how far the shared clock moves
# just before the round starts.
ROUNDS: list[tuple[str, float]] = [
    ("fail", RECOVERY),  # recovery: one probe, which fails and reopens the circuit
    ("succeed", RECOVERY),  # recovery again: one probe, success 1 of 3
    ("succeed", CACHE_AGE + 1),  # every cache stale; the lease holder probes: 2 of 3
    ("succeed", CACHE_AGE + 1),  # 3 of 3: the circuit closes
    ("closed", CACHE_AGE + 1),  # closed: every call runs
]

START_TIMEOUT = 90.0  # spawning 20 interpreters takes 15-25 s on two cores
ROUND_TIMEOUT = 20.0
STORE_TIMEOUT = 10.0  # one server thread serves the whole fleet: never fail open here


def _config() -> CircuitBreakerConfig:
    return CircuitBreakerConfig(
        failure_threshold=1,
        success_threshold=SUCCESSES,
        recovery_timeout=RECOVERY,
        local_cache_max_age=CACHE_AGE,
        store_timeout=STORE_TIMEOUT,
    )


class SharedClock:
    """Both clocks of a breaker, read from one number of seconds the parent advances."""

    def __init__(self, elapsed: Any) -> None:
        self._elapsed = elapsed

    def monotonic(self) -> float:
        return MONOTONIC_START + float(self._elapsed.value)

    def time(self) -> float:
        return WALL_START + float(self._elapsed.value)


@dataclass
class Fleet:
    """Everything the processes share. Handed to each child when it is spawned."""

    url: str
    table: str
    error_dir: str
    elapsed: Any  # Value('d'): seconds since the start of the test, for every clock
    start: Any  # Barrier: every child and the parent, before a round
    end: Any  # Barrier: after a round
    everyone_tried: list[Any]  # Event per round: all CALLERS callers made their attempt
    attempts: Any  # Array('i') per round: rejected callers, plus calls that got through
    calls: Any  # downstream calls
    rejections: Any  # CircuitBreakerOpenError
    failures: Any  # the downstream's own ConnectionError
    successes: Any  # calls that returned the downstream's result
    prober: Any  # index of the process whose call reached the downstream


def _bump(counter: Any, number: int) -> int:
    with counter.get_lock():
        counter[number] += 1
        return int(counter[number])


def _attempted(fleet: Fleet, number: int) -> None:
    if _bump(fleet.attempts, number) == CALLERS:
        fleet.everyone_tried[number].set()


async def _caller(
    index: int, number: int, mode: str, breaker: CircuitBreaker, fleet: Fleet
) -> None:
    async def downstream() -> str:
        _bump(fleet.calls, number)
        fleet.prober[number] = index
        if mode == "closed":
            return "ok"
        _attempted(fleet, number)
        # Hold the probe until every caller of the fleet has tried: a second call
        # getting through in this round would be seen, not missed.
        tried = fleet.everyone_tried[number]
        if not await anyio.to_thread.run_sync(tried.wait, ROUND_TIMEOUT):
            raise RuntimeError(f"round {number}: not every caller made its attempt")
        if mode == "fail":
            raise ConnectionError("still down")
        return "ok"

    try:
        await breaker.call(downstream)
    except CircuitBreakerOpenError:
        _bump(fleet.rejections, number)
        _attempted(fleet, number)
    except ConnectionError:
        _bump(fleet.failures, number)
    else:
        _bump(fleet.successes, number)


async def _run_child(index: int, fleet: Fleet) -> None:
    async with DynamoDBPersistence(fleet.table, endpoint_url=fleet.url) as store:
        breaker = CircuitBreaker(CIRCUIT, store, config=_config(), clock=SharedClock(fleet.elapsed))
        await store.read(CIRCUIT)  # open the client before the first round
        fleet.end.wait(START_TIMEOUT)  # ready
        for number, (mode, _) in enumerate(ROUNDS):
            fleet.start.wait(ROUND_TIMEOUT)
            async with anyio.create_task_group() as tg:
                for _ in range(TASKS):
                    tg.start_soon(_caller, index, number, mode, breaker, fleet)
            fleet.end.wait(ROUND_TIMEOUT)


def _child(index: int, fleet: Fleet) -> None:
    """Entry point of one spawned process."""
    try:
        asyncio.run(_run_child(index, fleet))
    except BaseException:
        Path(fleet.error_dir, f"child-{index:02}.txt").write_text(traceback.format_exc())
        fleet.start.abort()  # free everyone else at once instead of at a timeout
        fleet.end.abort()
        raise SystemExit(1) from None


async def _fail() -> None:
    raise ConnectionError("down")


async def _create_and_trip(url: str, table: str, clock: SharedClock) -> None:
    await DynamoDBPersistence.create_table(table, endpoint_url=url)
    async with DynamoDBPersistence(table, endpoint_url=url) as store:
        breaker = CircuitBreaker(CIRCUIT, store, config=_config(), clock=clock)
        with pytest.raises(ConnectionError):
            await breaker.call(_fail)
        record = await store.read(CIRCUIT)
    assert record is not None
    assert record.state is CircuitState.OPEN
    assert record.opened_at == int(WALL_START)


async def _read_state(url: str, table: str) -> CircuitState | None:
    async with DynamoDBPersistence(table, endpoint_url=url) as store:
        record = await store.read(CIRCUIT)
    return None if record is None else record.state


def _watch(processes: list[Any], fleet: Fleet, stop: threading.Event) -> None:
    """Break the barriers as soon as a child dies, rather than at their timeouts. (A
    child exits with 0 only after the last round.)"""
    while not stop.wait(0.2):
        if any(process.exitcode not in (None, 0) for process in processes):
            fleet.start.abort()
            fleet.end.abort()
            return


def _join_all(processes: list[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))


def _child_errors(error_dir: Path) -> str:
    reports = [path.read_text() for path in sorted(error_dir.glob("child-*.txt"))]
    # The cause first: the others only saw the barriers it broke.
    reports.sort(key=lambda report: "BrokenBarrierError" in report)
    return "\n".join(reports)


def test_20_processes_x_20_tasks_make_one_downstream_call_per_probe_round(
    counting_moto: Any, table_name: str, tmp_path: Path
) -> None:
    """20 OS processes x 20 tasks on one table: each probe round (a failed probe, then
    three successful ones until the circuit closes) makes exactly one downstream call in
    the whole fleet and rejects the other 399; the lease stays with its process; then
    the closed circuit lets all 400 through."""
    ctx = multiprocessing.get_context("spawn")
    rounds = len(ROUNDS)

    def per_round(initial: int = 0) -> Any:
        return ctx.Array("i", [initial] * rounds)

    fleet = Fleet(
        url=counting_moto.url,
        table=table_name,
        error_dir=str(tmp_path),
        elapsed=ctx.Value("d", 0.0),
        start=ctx.Barrier(PROCESSES + 1),
        end=ctx.Barrier(PROCESSES + 1),
        everyone_tried=[ctx.Event() for _ in range(rounds)],
        attempts=per_round(),
        calls=per_round(),
        rejections=per_round(),
        failures=per_round(),
        successes=per_round(),
        prober=per_round(-1),
    )
    asyncio.run(_create_and_trip(fleet.url, fleet.table, SharedClock(fleet.elapsed)))

    processes = [
        ctx.Process(target=_child, args=(index, fleet), name=f"fleet-{index}", daemon=True)
        for index in range(PROCESSES)
    ]
    traffic: list[Counter[str]] = []
    stop_watching = threading.Event()
    watchdog = threading.Thread(target=_watch, args=(processes, fleet, stop_watching))
    try:
        for process in processes:
            process.start()
        watchdog.start()
        phase = "start-up"
        broken = False
        try:
            fleet.end.wait(START_TIMEOUT)  # every child is up, its client open
            for number, (_, advance) in enumerate(ROUNDS):
                phase = f"round {number}"
                # Every child is waiting at the start barrier: nobody reads the clock.
                with fleet.elapsed.get_lock():
                    fleet.elapsed.value += advance
                counting_moto.reset_counts()
                fleet.start.wait(ROUND_TIMEOUT)
                fleet.end.wait(ROUND_TIMEOUT)
                traffic.append(Counter(counting_moto.counts))
        except threading.BrokenBarrierError:
            broken = True
        finally:
            stop_watching.set()  # only the watchdog polls the children until here
            watchdog.join()
        _join_all(processes, 5 if broken else ROUND_TIMEOUT)
        if broken:
            pytest.fail(f"the fleet broke down in {phase}:\n{_child_errors(tmp_path)}")
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
        _join_all(processes, 5)

    assert _child_errors(tmp_path) == ""
    assert [process.exitcode for process in processes] == [0] * PROCESSES
    assert list(fleet.calls) == [1, 1, 1, 1, CALLERS]
    assert list(fleet.rejections) == [CALLERS - 1] * 4 + [0]
    assert list(fleet.failures) == [1, 0, 0, 0, 0]
    assert list(fleet.successes) == [0, 1, 1, 1, CALLERS]
    # The process that won the lease after the failed probe keeps it until it closes.
    assert fleet.prober[1] == fleet.prober[2] == fleet.prober[3] != -1
    # One store read per process per round, shared by its 20 tasks; writes only for the
    # election (at most one attempt per process), the renewals and the transitions.
    assert [counts["GetItem"] for counts in traffic] == [PROCESSES] * rounds
    assert all(1 <= traffic[number]["UpdateItem"] <= PROCESSES + 1 for number in (0, 1))
    assert [counts["UpdateItem"] for counts in traffic[2:]] == [1, 2, 0]
    assert asyncio.run(_read_state(fleet.url, fleet.table)) is CircuitState.CLOSED
