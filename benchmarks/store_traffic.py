"""Store economics: what 100,000 healthy calls cost the shared store, per breaker.

A healthy circuit must cost the shared store next to nothing, since failures are counted in
process memory and only the circuit's state is shared: no write at all, since only a
transition writes, and reads bounded by the cache, at most one per circuit per process per
``local_cache_max_age``, however many tasks call at once. Over ``D`` seconds of calls that
is at most ``ceil(D / local_cache_max_age) + 1`` reads: one to fill the cold cache, one
each time it expires. This is the figure that decides what a fleet pays DynamoDB, and the
one a per-call read (or a read per task) would blow up. The peers that share state are
measured the same way, for scale: what one healthy call costs their store.

How it measures, and why:

* Requests are counted at the servers, never inside a breaker: an in-process moto server
  counts DynamoDB requests per operation (``benchmarks/_moto.py``), a real ``redis-server``
  counts commands (``benchmarks/_redis.py``, ``INFO commandstats``). The figures hold
  whatever path a request took inside a breaker or its client library.
* aiocircuit's calls are paced over real wall time (10 s; 6 s in quick mode, still long
  enough for the default 5 s cache to expire once), because its cache expires in real
  time: 100,000 calls made in a 0.2 s burst would say nothing about expiry. Call ``i``
  starts no earlier than ``i * D / 100,000`` seconds after the first.
* aiocircuit runs twice, each time with a fresh store and breaker with the default
  configuration (``local_cache_max_age`` = 5 s), as a newly started process would: one
  task making every call, and 1,000 tasks sharing one breaker, 100 calls each, interleaved.
  The second is what a busy async service does, and where a missing single-flight read
  would show as one read per task each time the cache expires. The downstream answers at
  once but yields to the event loop, like any network call, so the tasks' calls interleave.
* aws-lambda-powertools, the other breaker on DynamoDB, makes the same 100,000 calls paced
  over the same seconds, *in the same window* as aiocircuit's one-task run, with its own
  default ``local_cache_max_age`` (5 s, as ours) and on its own moto server, so that the
  two counts stay apart. Its decorator is sync (it would not await a coroutine), so it runs
  as a sync service runs it: one worker thread calling the decorated function in a plain
  loop, paced by ``time.sleep`` on the same monotonic clock as the event loop's pacer. A
  thread hop per call (``_contenders``' ``attempt``) would cost the event loop more than
  the calls themselves at 10,000 to 17,000 calls a second. Running it beside aiocircuit,
  rather than after, keeps quick mode short; the price is that the two share the GIL, which
  can only delay calls (a pacer that falls behind is reported, and the read bound is then
  computed for the measured spread), never add requests. Its cache keeps whole seconds
  (``int(now) + max_age``), so it expires on a second's boundary, at most 5 s after a read:
  the same bound holds for it.
* The peers on Redis (purgatory, aiobreaker, pybreaker) cache nothing: each call reads,
  and for two of them writes, the store, so their cost per call does not depend on time or
  concurrency. They run one after another, after aiocircuit, on one redis-server (flushed
  and its counts reset before each), one task making calls as fast as it can, unpaced.
  Each makes a first call apart (it opens the connection and, for purgatory, registers the
  circuit), then steady calls: 99,999 in the default mode (100,000 in all, counted
  exactly), 999 in quick mode, or fewer if a peer's time budget runs out. Per 100,000
  calls is then the first call's commands plus the steady calls' per-call count times
  99,999, marked ``*`` when extrapolated. None of them pipelines on the call path, so each
  command is a round trip. Commands sent while the breaker is built (pybreaker's and
  aiobreaker's ``SETNX`` of their keys) are reported apart, as setup.
* pybreaker is sync, so it runs as Powertools does, in one worker thread calling it in a
  loop; purgatory and aiobreaker run in the event loop (aiobreaker's Redis storage calls
  the sync client there, blocking the loop, which is its design). Every peer is built by
  ``benchmarks/_contenders.py`` on its own kind of shared store, so that every scenario
  configures it alike.
* circuitbreaker has no shared store at all (each process decides alone), so it has
  nothing to count: it is shown as n/a with that reason.

A store read that fails makes aiocircuit (and Powertools) fail open and retry on the next
call; such failures are counted from their loggers and reported, because they would
explain extra reads. The exit status is 0 whatever the counts (1 only when moto is missing,
so that aiocircuit itself could not be measured).
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from aiocircuit import CircuitBreaker, CircuitBreakerConfig

from . import _contenders, _moto, _redis, _report

SCENARIO = "store-traffic"
TITLE = "store economics"
CALLS = 100_000
TASKS = 1_000
POWERTOOLS = "aws-lambda-powertools"
DYNAMODB = "DynamoDB (moto)"
REDIS_PEERS = ("purgatory", "aiobreaker", "pybreaker")
NO_SHARED_STORE = (
    "no shared store: its state lives in each process's memory, so there is no store "
    "traffic to count (and no fleet-wide view)"
)

# Redis commands by what they do to the circuit's keys; anything else is "other".
REDIS_READS = frozenset(
    {"GET", "MGET", "HGET", "HMGET", "HGETALL", "EXISTS", "STRLEN", "TTL", "PTTL", "TYPE"}
)
REDIS_WRITES = frozenset(
    {
        "SET", "SETNX", "SETEX", "PSETEX", "MSET", "GETSET", "INCR", "INCRBY", "DECR",
        "DECRBY", "DEL", "UNLINK", "HSET", "HSETNX", "HINCRBY", "HDEL", "EXPIRE", "PEXPIRE",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Mode:
    """How long aiocircuit's calls are spread over, and how many calls each Redis peer
    makes within how many seconds at most."""

    name: str
    duration: float
    peer_calls: int
    peer_seconds: float


# 6 s: still past one expiry of the default 5 s cache. 1,000 Redis calls are enough to
# show a per-call count that is a whole number of commands, in well under a second each.
QUICK = Mode("quick", duration=6.0, peer_calls=1_000, peer_seconds=3.0)
DEFAULT = Mode("default", duration=10.0, peer_calls=CALLS, peer_seconds=45.0)


@dataclass(frozen=True, slots=True)
class Scenario:
    """``tasks`` tasks sharing one aiocircuit breaker, making ``CALLS`` calls between them."""

    key: str
    title: str
    tasks: int


SCENARIOS = (
    Scenario("one_task", "aiocircuit, one task", 1),
    Scenario("concurrent_tasks", f"aiocircuit, {TASKS:,} tasks", TASKS),
)


# -- results -----------------------------------------------------------------------------


@dataclass(slots=True)
class Paced:
    """What ``calls`` calls paced over ``duration`` seconds cost a DynamoDB server
    (aiocircuit's scenarios, and Powertools for comparison)."""

    breaker: str
    label: str
    key: str
    tasks: int
    calls: int
    duration: float  # the nominal spread
    spread: float  # from the first call's start to the last call's start, measured
    cache_max_age: float
    requests: Counter[str]
    has_target: bool  # the target is aiocircuit's; Powertools is held to nothing
    store: str = DYNAMODB
    store_failures: int = 0  # warnings logged: store operations that failed open
    store_failure_examples: list[str] = field(default_factory=list)  # the first few
    call_errors: int = 0  # calls that did not return the healthy result
    call_error_example: str = ""

    @property
    def reads(self) -> int:
        return _moto.reads(self.requests)

    @property
    def writes(self) -> int:
        return _moto.writes(self.requests)

    @property
    def other(self) -> int:
        return self.requests.total() - self.reads - self.writes

    @property
    def fell_behind(self) -> bool:
        """The pacing could not keep up: the last call started more than 1% late."""
        return self.spread > self.duration * 1.01

    @property
    def bound_duration(self) -> float:
        """The spread the read bound is computed for: the nominal one, or the measured
        one if the pacing fell behind (reads happen only as calls start)."""
        return self.spread if self.fell_behind else self.duration

    @property
    def read_bound(self) -> int:
        return math.ceil(self.bound_duration / self.cache_max_age) + 1

    @property
    def reads_met(self) -> bool:
        return self.reads <= self.read_bound

    @property
    def writes_met(self) -> bool:
        return self.writes == 0

    def per_100k(self, count: int) -> float:
        return count * CALLS / self.calls


@dataclass(slots=True)
class Unpaced:
    """What a Redis peer's calls cost the server: its first call, then ``steady_calls``
    more, made back to back."""

    breaker: str
    store: str
    setup: Counter[str]  # while the breaker was built
    first: Counter[str]  # the first call: connection, registration
    steady: Counter[str]  # every later call
    steady_calls: int
    seconds: float
    capped: bool  # the time budget ran out before the planned calls

    @property
    def label(self) -> str:
        return self.breaker

    @property
    def calls(self) -> int:
        return 1 + self.steady_calls

    @property
    def extrapolated(self) -> bool:
        return self.calls != CALLS

    @staticmethod
    def kind_of(command: str) -> str:
        if command in REDIS_READS:
            return "reads"
        if command in REDIS_WRITES:
            return "writes"
        return "other"

    def count(self, counts: Counter[str], kind: str) -> int:
        return sum(n for command, n in counts.items() if self.kind_of(command) == kind)

    def per_call(self, kind: str | None = None) -> float:
        """Steady-state commands per call (of one kind, or all of them)."""
        if self.steady_calls == 0:
            return math.nan
        steady = self.steady.total() if kind is None else self.count(self.steady, kind)
        return steady / self.steady_calls

    def per_100k(self, kind: str) -> float:
        """The first call's commands of ``kind``, plus the steady calls' times 99,999."""
        return self.count(self.first, kind) + self.per_call(kind) * (CALLS - 1)


@dataclass(frozen=True, slots=True)
class NotRun:
    """A breaker that could not be measured here, and why."""

    breaker: str
    label: str
    store: str
    reason: str


Row = Paced | Unpaced | NotRun


# -- the calls ---------------------------------------------------------------------------


async def healthy() -> int:
    """The downstream: answers at once, but yields to the event loop like a real call."""
    await anyio.lowlevel.checkpoint()
    return 1


def healthy_sync() -> int:
    """The downstream of the sync breakers: answers at once."""
    return 1


HEALTHY = _contenders.Call(healthy, healthy_sync)


class _WarningCounter(logging.Handler):
    """Counts the warnings a breaker's logger emits (store failures), keeping the first
    few."""

    KEEP = 5

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < self.KEEP:
            self.first.append(record.getMessage())


@dataclass(slots=True)
class _Pacer:
    """Spreads the calls of a scenario: call ``i`` starts no earlier than
    ``start + i * interval``. Records when the last call started."""

    start: float
    interval: float
    last_start: float = -math.inf

    async def calls(
        self, protected: Callable[[], Awaitable[int]], first: int, stride: int, count: int
    ) -> None:
        """Make ``count`` calls, numbered ``first``, ``first + stride``, ... in the whole
        scenario."""
        for k in range(count):
            due = self.start + (first + k * stride) * self.interval
            now = anyio.current_time()
            if now < due:
                await anyio.sleep_until(due)
                now = anyio.current_time()
            self.last_start = max(self.last_start, now)
            if await protected() != 1:
                raise RuntimeError("aiocircuit changed the healthy call's result")

    def calls_sync(
        self, call_sync: Callable[[Callable[[], object]], object], count: int
    ) -> tuple[int, str]:
        """The same, in a sync loop on this thread (``time.monotonic`` is the clock of
        asyncio's loop, so one pacer serves both). Returns how many calls did not return
        the healthy result, and the first such result."""
        errors, first_error = 0, ""
        for i in range(count):
            due = self.start + i * self.interval
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
                now = time.monotonic()
            self.last_start = max(self.last_start, now)
            try:
                result = call_sync(healthy_sync)
            except Exception as exc:  # a peer that breaks is reported, never fatal
                result = f"{type(exc).__name__}: {exc}"
            if result != 1:
                errors += 1
                first_error = first_error or repr(result)
        return errors, first_error


def _sync_path(contender: _contenders.Contender) -> Callable[[Callable[[], object]], object]:
    """The call path of a sync contender, called on the current thread.

    ``_contenders`` runs sync breakers through a thread hop per call; here one worker
    thread makes every call, as a sync service's worker would, so the breaker's own sync
    entry point is used directly."""
    if not isinstance(contender, _contenders.Threaded):
        raise TypeError(f"{contender.name} is not a sync breaker")
    return contender.call_sync


async def _run_aiocircuit(
    server: _moto.CountingMotoServer, table: str, scenario: Scenario, pacer: _Pacer
) -> Paced:
    from aiocircuit.persistence.dynamodb import DynamoDBPersistence

    store = DynamoDBPersistence(table, endpoint_url=server.url)
    config = CircuitBreakerConfig()  # the defaults: local_cache_max_age=5
    breaker = CircuitBreaker(f"store-traffic-{scenario.key}", store, config=config)
    protected = breaker(healthy)
    per_task = CALLS // scenario.tasks

    warnings = _WarningCounter()
    logger = logging.getLogger("aiocircuit")
    logger.addHandler(warnings)
    before = server.snapshot()
    try:
        async with anyio.create_task_group() as tg:
            for task in range(scenario.tasks):
                tg.start_soon(pacer.calls, protected, task, scenario.tasks, per_task)
        requests = server.snapshot()
        requests.subtract(before)
    finally:
        logger.removeHandler(warnings)
        await store.aclose()
    return Paced(
        breaker="aiocircuit",
        label=scenario.title,
        key=scenario.key,
        tasks=scenario.tasks,
        calls=per_task * scenario.tasks,
        duration=pacer.interval * CALLS,
        spread=pacer.last_start - pacer.start,
        cache_max_age=config.local_cache_max_age,
        requests=+requests,  # drop operations that did not occur
        has_target=True,
        store_failures=warnings.count,
        store_failure_examples=warnings.first,
    )


def _powertools_default_cache_age() -> int:
    """Powertools' own default ``local_cache_max_age`` (5 s in 3.37, as aiocircuit's)."""
    reason = _report.missing(POWERTOOLS)
    if reason is not None:
        raise _contenders.Unavailable(reason)
    from aws_lambda_powertools.utilities.circuit_breaker import CircuitBreakerConfig as Config

    return int(Config().local_cache_max_age)


async def _build_powertools(server: _moto.CountingMotoServer) -> _contenders.Contender:
    from aiocircuit.persistence.dynamodb import DynamoDBPersistence

    table = f"benchmark-store-traffic-powertools-{os.getpid()}"
    await DynamoDBPersistence.create_table(table, endpoint_url=server.url)
    settings = _contenders.Settings(local_cache_max_age=_powertools_default_cache_age())
    shared = _contenders.SharedStores(dynamodb_url=server.url, dynamodb_table=table)
    return await _contenders.build(POWERTOOLS, "store-traffic-powertools", settings, shared)


async def _run_powertools(
    server: _moto.CountingMotoServer, contender: _contenders.Contender, pacer: _Pacer
) -> Paced:
    warnings = _WarningCounter()
    logger = logging.getLogger("aws_lambda_powertools.utilities.circuit_breaker")
    logger.addHandler(warnings)
    before = server.snapshot()
    try:
        errors, first_error = await anyio.to_thread.run_sync(
            pacer.calls_sync, _sync_path(contender), CALLS
        )
        requests = server.snapshot()
        requests.subtract(before)
    finally:
        logger.removeHandler(warnings)
        await contender.aclose()
    return Paced(
        breaker=POWERTOOLS,
        label=POWERTOOLS,
        key="powertools",
        tasks=1,
        calls=CALLS,
        duration=pacer.interval * CALLS,
        spread=pacer.last_start - pacer.start,
        cache_max_age=_powertools_default_cache_age(),
        requests=+requests,
        has_target=False,
        store_failures=warnings.count,
        store_failure_examples=warnings.first,
        call_errors=errors,
        call_error_example=first_error,
    )


async def _measure_dynamodb(duration: float, peers: bool, progress: _report.Progress) -> list[Row]:
    """aiocircuit's two scenarios, one after the other, and Powertools beside the first,
    on its own moto server."""
    from aiocircuit.persistence.dynamodb import DynamoDBPersistence

    results: dict[str, Row] = {}
    with _moto.CountingMotoServer() as ours, _moto.CountingMotoServer() as theirs:
        table = f"benchmark-store-traffic-{os.getpid()}"
        await DynamoDBPersistence.create_table(table, endpoint_url=ours.url)
        powertools: _contenders.Contender | None = None
        if not peers:
            results["powertools"] = NotRun(POWERTOOLS, POWERTOOLS, DYNAMODB, "skipped (--no-peers)")
        else:
            try:
                powertools = await _build_powertools(theirs)
            except _contenders.Unavailable as exc:
                results["powertools"] = NotRun(POWERTOOLS, POWERTOOLS, DYNAMODB, str(exc))

        async def run_ours(scenario: Scenario, pacer: _Pacer) -> None:
            results[scenario.key] = await _run_aiocircuit(ours, table, scenario, pacer)

        async def run_theirs(contender: _contenders.Contender, pacer: _Pacer) -> None:
            try:
                results["powertools"] = await _run_powertools(theirs, contender, pacer)
            except Exception as exc:  # a peer that breaks is reported, never fatal
                reason = f"failed: {type(exc).__name__}: {exc}"
                results["powertools"] = NotRun(POWERTOOLS, POWERTOOLS, DYNAMODB, reason)

        for number, scenario in enumerate(SCENARIOS):
            start = anyio.current_time()
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_ours, scenario, _Pacer(start, duration / CALLS))
                if number == 0 and powertools is not None:
                    tg.start_soon(run_theirs, powertools, _Pacer(start, duration / CALLS))
            done = results[scenario.key]
            assert isinstance(done, Paced)
            progress.advance(detail=f"{scenario.title}: {done.reads} reads, {done.writes} writes")
    return [results[key] for key in (*(s.key for s in SCENARIOS), "powertools")]


async def _calls_async(contender: _contenders.Contender, count: int, deadline: float) -> int:
    """Up to ``count`` calls, back to back, until ``deadline``; returns how many."""
    for made in range(count):
        if made % 100 == 0 and time.monotonic() >= deadline:
            return made
        outcome = await contender.attempt(HEALTHY)
        if outcome is not _contenders.Outcome.OK:
            raise RuntimeError(f"a healthy call was {outcome.value}")
    return count


def _calls_sync(
    call_sync: Callable[[Callable[[], object]], object], count: int, deadline: float
) -> int:
    """The same on this thread, through a sync breaker's own entry point."""
    for made in range(count):
        if made % 100 == 0 and time.monotonic() >= deadline:
            return made
        result = call_sync(healthy_sync)
        if result != 1:
            raise RuntimeError(f"a healthy call returned {result!r}")
    return count


async def _run_redis_peer(name: str, server: _redis.RedisServer, mode: Mode) -> Unpaced | NotRun:
    """``name`` on a flushed server: its setup, its first call, then its steady calls."""
    server.flush()
    server.reset_counts()
    shared = _contenders.SharedStores(redis_url=server.url)
    circuit = f"store-traffic-{name}"
    try:
        contender = await _contenders.build(name, circuit, _contenders.Settings(), shared)
    except _contenders.Unavailable as exc:
        return NotRun(name, name, "Redis", str(exc))

    async def calls(count: int, deadline: float) -> int:
        if contender.kind == "sync":
            path = _sync_path(contender)
            made: int = await anyio.to_thread.run_sync(_calls_sync, path, count, deadline)
            return made
        return await _calls_async(contender, count, deadline)

    try:
        setup = server.commands()
        server.reset_counts()
        await calls(1, math.inf)
        first = server.commands()
        server.reset_counts()
        planned = mode.peer_calls - 1
        started = time.monotonic()
        made = await calls(planned, started + mode.peer_seconds)
        seconds = time.monotonic() - started
        steady = server.commands()
    except Exception as exc:  # a peer that breaks is reported, never fatal
        return NotRun(name, name, contender.store, f"failed: {type(exc).__name__}: {exc}")
    finally:
        await contender.aclose()
    return Unpaced(
        breaker=name,
        store=contender.store,
        setup=+setup,
        first=+first,
        steady=+steady,
        steady_calls=made,
        seconds=seconds,
        capped=made < planned,
    )


async def _measure_redis(mode: Mode, progress: _report.Progress) -> list[Row]:
    reason = _redis.unavailable()
    if reason is not None:
        for _ in REDIS_PEERS:
            progress.advance()
        return [NotRun(name, name, "Redis", reason) for name in REDIS_PEERS]
    rows: list[Row] = []
    with _redis.RedisServer() as server:
        for name in REDIS_PEERS:
            row = await _run_redis_peer(name, server, mode)
            rows.append(row)
            detail = row.reason if isinstance(row, NotRun) else f"{row.per_call():.2f}/call"
            progress.advance(detail=f"{name}: {detail}")
    return rows


async def _measure(mode: Mode, duration: float, peers: bool) -> list[Row]:
    missing = _moto.missing_requirements()
    steps = len(SCENARIOS) + (len(REDIS_PEERS) if peers else 0)
    rows: list[Row] = []
    with _report.Progress(TITLE, steps) as progress:
        if missing:
            reason = f"needs {', '.join(missing)} ({_moto.INSTALL_HINT})"
            rows += [NotRun("aiocircuit", s.title, DYNAMODB, reason) for s in SCENARIOS]
            rows.append(NotRun(POWERTOOLS, POWERTOOLS, DYNAMODB, reason))
            progress.advance(len(SCENARIOS))
        else:
            rows += await _measure_dynamodb(duration, peers, progress)
        if peers:
            rows += await _measure_redis(mode, progress)
        else:
            rows += [NotRun(n, n, "Redis", "skipped (--no-peers)") for n in REDIS_PEERS]
    rows.append(NotRun("circuitbreaker", "circuitbreaker", "memory (per process)", NO_SHARED_STORE))
    return rows


# -- report ------------------------------------------------------------------------------

HEADERS = (
    "breaker",
    "store",
    "calls",
    "over s",
    "reads/100k",
    "writes/100k",
    "other/100k",
    "round trips/call",
    "bound / target",
)


def _count(value: float, extrapolated: bool) -> str:
    return f"{value:,.0f}" + ("*" if extrapolated else "")


def _per_call(value: float) -> str:
    """``2.00``, or ``1/50,000`` for a small fraction, or ``0``."""
    if math.isnan(value):
        return "n/a"
    if value == 0:
        return "0"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"1/{round(1 / value):,}"


def _bound(row: Paced) -> str:
    bound = f"<= {row.read_bound} reads, 0 writes"
    within = row.reads_met and row.writes_met
    if not row.has_target:  # aiocircuit's bound, shown for scale
        return f"{bound}: {'within' if within else 'exceeded'} (no target)"
    return f"{bound}: {'met' if within else 'MISSED'}"


def _table_row(row: Row) -> list[object]:
    if isinstance(row, NotRun):
        return [row.label, row.store, None, None, None, None, None, None, None]
    if isinstance(row, Paced):
        total = row.requests.total()
        return [
            row.label,
            row.store,
            f"{row.calls:,}",
            f"{row.spread:.2f}",
            _count(row.per_100k(row.reads), False),
            _count(row.per_100k(row.writes), False),
            _count(row.per_100k(row.other), False),
            _per_call(total / row.calls),
            _bound(row),
        ]
    e = row.extrapolated
    return [
        row.breaker,
        row.store,
        f"{row.calls:,}",
        f"{row.seconds:.2f}",
        _count(row.per_100k("reads"), e),
        _count(row.per_100k("writes"), e),
        _count(row.per_100k("other"), e),
        _per_call(row.per_call()),
        "- (no cache)",
    ]


def _describe_commands(counts: Counter[str]) -> str:
    return ", ".join(f"{n:,} {c}" for c, n in counts.most_common()) if counts else "none"


def _notes(rows: list[Row], mode: Mode) -> list[str]:
    lines = []
    for row in rows:
        if isinstance(row, NotRun):
            lines.append(f"{row.label}: n/a: {row.reason}")
        elif isinstance(row, Unpaced):
            per_call = ", ".join(
                f"{n / row.steady_calls:.2f} {c}" for c, n in row.steady.most_common()
            )
            how = (
                f"{row.calls:,} calls in {row.seconds:.1f} s"
                + (f" (time budget of {mode.peer_seconds:g} s ran out)" if row.capped else "")
                + ("; per 100k extrapolated" if row.extrapolated else "")
            )
            lines.append(
                f"{row.breaker}: per call {per_call or 'nothing'}; first call "
                f"{_describe_commands(row.first)}; setup {_describe_commands(row.setup)} ({how})"
            )
    return lines


def _verdicts(rows: list[Row]) -> list[str]:
    lines = []
    for r in rows:
        if not isinstance(r, Paced):
            continue
        bound = f"ceil({r.bound_duration:.4g} / {r.cache_max_age:g}) + 1 = {r.read_bound}"
        if r.has_target:
            met = r.reads_met and r.writes_met
            verdict = "target met:   " if met else "TARGET MISSED:"
        else:
            verdict = "for scale:    "
        lines.append(
            f"{verdict} {r.label + ':':<24} {r.reads} reads (bound {bound}) "
            f"{'ok' if r.reads_met else 'EXCEEDED'}, {r.writes} writes (target 0) "
            f"{'ok' if r.writes_met else 'EXCEEDED'}"
        )
        if r.fell_behind:
            lines.append(
                f"  note: pacing fell behind: the last call started after {r.spread:.2f} s, "
                f"not {r.duration:g} s; the bound is computed for the longer spread"
            )
        if r.store_failures:
            lines.append(
                f"  note: {r.store_failures} store failure(s) made calls fail open "
                f"(each is retried by the next call); first: {r.store_failure_examples[0]}"
            )
        if r.call_errors:
            lines.append(
                f"  note: {r.call_errors} call(s) did not return the healthy result; "
                f"first: {r.call_error_example}"
            )
    return lines


def _headlines(rows: list[Row], duration: float) -> list[_report.Headline]:
    headlines = []
    for r in rows:
        what = f"store economics, {r.label}"
        if isinstance(r, NotRun):
            headlines.append(_report.Headline(what, f"n/a: {r.reason}"))
        elif isinstance(r, Paced):
            value = (
                f"{r.reads} DynamoDB reads, {r.writes} writes per {r.calls:,} healthy calls "
                f"over {r.bound_duration:.3g} s"
            )
            target = f"<= {r.read_bound} reads, 0 writes"
            if r.has_target:
                met = r.reads_met and r.writes_met
                headlines.append(_report.Headline(what, value, target, met))
            else:
                headlines.append(_report.Headline(what, value, f"(aiocircuit's: {target})"))
        else:
            commands = " + ".join(
                f"{n / r.steady_calls:.2g} {c}" for c, n in r.steady.most_common()
            )
            value = (
                f"{r.per_call():.2f} Redis round trips per call ({commands}) = "
                f"{r.per_call() * CALLS:,.0f} per {CALLS:,} calls"
            )
            headlines.append(_report.Headline(what, value))
    return headlines


def _row_json(row: Row) -> dict[str, Any]:
    if isinstance(row, NotRun):
        na = _report.na(row.reason)
        return {
            "breaker": row.breaker,
            "label": row.label,
            "store": row.store,
            "reads_per_100k_calls": na,
            "writes_per_100k_calls": na,
            "round_trips_per_call": na,
        }
    if isinstance(row, Paced):
        return {
            "breaker": row.breaker,
            "label": row.label,
            "scenario": row.key,
            "store": row.store,
            "paced": True,
            "tasks": row.tasks,
            "calls": row.calls,
            "duration_seconds": row.duration,
            "spread_seconds": round(row.spread, 3),
            "local_cache_max_age": row.cache_max_age,
            "requests": dict(sorted(row.requests.items())),
            "reads": row.reads,
            "writes": row.writes,
            "other": row.other,
            "reads_per_100k_calls": row.per_100k(row.reads),
            "writes_per_100k_calls": row.per_100k(row.writes),
            "round_trips_per_call": row.requests.total() / row.calls,
            "read_bound": row.read_bound,
            "target_applies": row.has_target,
            "reads_within_bound": row.reads_met,
            "no_writes": row.writes_met,
            "pacing_fell_behind": row.fell_behind,
            "store_failures": row.store_failures,
            "store_failure_examples": row.store_failure_examples,
            "call_errors": row.call_errors,
        }
    return {
        "breaker": row.breaker,
        "label": row.breaker,
        "store": row.store,
        "paced": False,
        "tasks": 1,
        "calls": row.calls,
        "steady_calls": row.steady_calls,
        "seconds": round(row.seconds, 3),
        "time_budget_ran_out": row.capped,
        "setup_commands": dict(row.setup),
        "first_call_commands": dict(row.first),
        "steady_commands": dict(row.steady),
        "round_trips_per_call": row.per_call(),
        "commands_per_call": {c: n / row.steady_calls for c, n in row.steady.items()},
        "reads_per_100k_calls": row.per_100k("reads"),
        "writes_per_100k_calls": row.per_100k("writes"),
        "other_per_100k_calls": row.per_100k("other"),
        "per_100k_extrapolated": row.extrapolated,
    }


def _payload(rows: list[Row], mode: Mode, duration: float, elapsed: float) -> dict[str, Any]:
    return {
        "title": TITLE,
        "target": (
            "aiocircuit, per scenario: 0 writes, and at most "
            "ceil(duration / local_cache_max_age) + 1 reads, counted at the (moto) server"
        ),
        "mode": mode.name,
        "duration_seconds": duration,
        "calls_per_scenario": CALLS,
        "redis_peer_calls_planned": mode.peer_calls,
        "redis_peer_seconds_budget": mode.peer_seconds,
        "elapsed_seconds": round(elapsed, 1),
        "rows": [_row_json(row) for row in rows],
    }


def _compact(value: float) -> str:
    """``0``, ``2``, ``100k``: a bar's label, short enough for a narrow bar."""
    return f"{value / 1000:,.0f}k" if value >= 10_000 else f"{value:,.0f}"


def _chart(rows: list[Row], duration: float) -> str:
    """Reads and writes per 100,000 calls, side by side per breaker, on a log axis."""
    reason = _report.charts_unavailable()
    if reason is not None:
        return f"chart: n/a: {reason}"
    plt = _report.pyplot()
    figure, axes = plt.subplots(figsize=(9, 4.8))
    width, floor, top = 0.38, 0.5, 10.0
    labels = []
    for x, row in enumerate(rows):
        label = row.label.replace("aiocircuit, ", "aiocircuit\n")
        labels.append(label.replace("-powertools", "-\npowertools"))
        if isinstance(row, NotRun):
            # The first clause of the reason: "no shared store", "needs moto", "failed".
            short = row.reason.split(":")[0].split(" (")[0]
            text = "n/a:\n" + "\n".join(textwrap.wrap(short, 14))
            axes.text(x, floor * 1.3, text, ha="center", va="bottom", fontsize=8)
            continue
        if isinstance(row, Paced):
            values = (row.per_100k(row.reads), row.per_100k(row.writes))
            mark = ""
        else:
            values = (row.per_100k("reads"), row.per_100k("writes"))
            mark = "*" if row.extrapolated else ""
        colour = _report.colour(row.breaker)
        for offset, value, hatch in ((-width / 2, values[0], ""), (width / 2, values[1], "//")):
            if value > 0:
                edge = "white" if hatch else colour
                axes.bar(x + offset, value, width, color=colour, hatch=hatch, edgecolor=edge)
            top = max(top, value)
            text = _compact(value) + (mark if value else "")
            axes.text(x + offset, max(value, floor), text, ha="center", va="bottom", fontsize=7)
    paced = [x for x, r in enumerate(rows) if isinstance(r, Paced)]
    for bound in sorted({r.read_bound for r in rows if isinstance(r, Paced) and r.has_target}):
        axes.hlines(  # across the DynamoDB breakers only: the bound means nothing for Redis
            bound,
            min(paced) - 0.5,
            max(paced) + 0.5,
            color="black",
            linestyle="--",
            linewidth=0.8,
            label=f"aiocircuit's read bound, ceil({duration:g} s / cache age) + 1 = {bound}",
        )
    axes.bar(0, 0, color="grey", label="reads (GetItem; Redis GET)")
    axes.bar(0, 0, color="grey", hatch="//", edgecolor="white", label="writes (none: no bar)")
    axes.legend(loc="upper left", fontsize=8)
    axes.set_yscale("log")
    axes.set_ylim(floor, top * 20)
    axes.set_xlim(-0.6, len(rows) - 0.4)
    axes.set_xticks(range(len(rows)), labels, fontsize=8)
    axes.set_ylabel(f"store requests per {CALLS:,} healthy calls (log)")
    axes.set_title(
        f"Store economics: DynamoDB (moto) and Redis requests per {CALLS:,} healthy calls\n"
        f"DynamoDB breakers: calls paced over {duration:g} s; Redis peers: unpaced, no cache"
        + (
            "; * extrapolated from fewer calls"
            if any(isinstance(r, Unpaced) and r.extrapolated for r in rows)
            else ""
        ),
        fontsize=9,
    )
    return f"chart written to {_report.save_chart(figure, SCENARIO)}"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks store-traffic",
        description=f"Store economics: store requests per {CALLS:,} healthy calls, counted "
        "at the servers: aiocircuit and Powertools on DynamoDB (moto), paced over real "
        "time; purgatory, aiobreaker and pybreaker on a real redis-server.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"spread aiocircuit's calls over {QUICK.duration:g} s instead of "
        f"{DEFAULT.duration:g} s, and make {QUICK.peer_calls:,} calls per Redis peer "
        f"instead of {DEFAULT.peer_calls:,}",
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="spread the paced calls over this many s"
    )
    parser.add_argument(
        "--peer-calls", type=int, default=None, help="calls per Redis peer (at least 2)"
    )
    parser.add_argument("--no-peers", action="store_true", help="measure aiocircuit alone")
    parser.add_argument("--output", type=Path, default=None, help="where to write the JSON results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the scenario, print the table and verdicts, write the JSON and the chart. 0 when
    aiocircuit could be measured, whatever the counts; 1 when moto or aioboto3 is missing."""
    args = _parse_args(argv)
    mode = QUICK if args.quick else DEFAULT
    if args.peer_calls is not None:
        mode = Mode(mode.name, mode.duration, max(2, args.peer_calls), mode.peer_seconds)
    duration = args.duration if args.duration is not None else mode.duration
    for variable in ("AIOCIRCUIT_DISABLED", "POWERTOOLS_CIRCUIT_BREAKER_DISABLED"):
        if os.environ.get(variable):
            print(f"warning: {variable} is set; that breaker is measured as a pass-through")
    print(
        f"{TITLE}: {mode.name} mode; {CALLS:,} healthy calls per DynamoDB breaker paced over "
        f"{duration:g} s; up to {mode.peer_calls:,} calls per Redis peer",
        flush=True,
    )
    started = time.perf_counter()
    rows = anyio.run(
        functools.partial(_measure, mode, duration, not args.no_peers), backend="asyncio"
    )
    elapsed = time.perf_counter() - started

    print()
    print(_report.table(HEADERS, (_table_row(row) for row in rows)))
    print()
    print(
        "Requests counted at the servers (moto: DynamoDB operations; redis-server: commands),\n"
        f"scaled to {CALLS:,} calls (* extrapolated: the first call's commands plus the later\n"
        "calls' per-call count times 99,999). over s: the paced calls' spread, or the Redis\n"
        "calls' duration. round trips/call: requests per call (Redis: after the first call).\n"
        "bound: the most reads allowed, ceil(duration / local_cache_max_age) + 1, and 0\n"
        "writes; the target is aiocircuit's, Powertools' bound is shown for comparison."
    )
    for line in _notes(rows, mode):
        print(line)
    print()
    for line in _verdicts(rows):
        print(line)

    path = _report.write_json(
        SCENARIO, _payload(rows, mode, duration, elapsed), _headlines(rows, duration), args.output
    )
    print(f"\nresults written to {path} ({elapsed:.0f} s)")
    print(_chart(rows, duration))
    measured = any(isinstance(r, Paced) and r.breaker == "aiocircuit" for r in rows)
    return 0 if measured else 1
