"""Store economics: DynamoDB requests that 100,000 healthy calls in one process cost.

A healthy circuit must cost no store traffic (DESIGN.md, "What is local, what is shared"):
no write at all, since only a transition writes, and reads bounded by the cache, at most
one per circuit per process per ``local_cache_max_age``, however many tasks call at once.
Over ``D`` seconds of calls that is at most ``ceil(D / local_cache_max_age) + 1`` reads:
one to fill the cold cache, one each time it expires. This is the figure that decides what
a fleet pays DynamoDB, and the one a per-call read (or a read per task) would blow up.

How it measures, and why:

* A moto server in this process (``benchmarks/_moto.py``) counts requests per DynamoDB
  operation at the server, so nothing inside aiocircuit is trusted to report its own
  traffic.
* The calls are paced over real wall time (10 s; 6 s in quick mode, still long enough
  for the cache to expire once), because the cache expires in real time: 100,000 calls
  made in a 0.2 s burst would say nothing about expiry. Call ``i`` starts no earlier
  than ``i * D / 100,000`` seconds after the first.
* Each scenario gets a fresh store and breaker with the default configuration
  (``local_cache_max_age`` = 5 s), as a newly started process would: its first call
  reads a cold cache and opens the store's client.
* Twice: one task making every call, and 1,000 tasks sharing one breaker, 100 calls each,
  interleaved. The second is what a busy async service does, and where a missing
  single-flight read would show as one read per task each time the cache expires.
* The downstream answers at once but yields to the event loop, like any network call, so
  the tasks' calls really interleave.

A store read that fails opens the circuit's fail-open path, which retries on the next
call; such failures are counted from the ``aiocircuit`` logger and reported, because they
would explain extra reads. The exit status is 0 whatever the counts.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

from aiocircuit import CircuitBreaker, CircuitBreakerConfig

from . import _moto

CALLS = 100_000
TASKS = 1_000
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "store_traffic.json"


@dataclass(frozen=True, slots=True)
class Mode:
    """How long the calls of each scenario are spread over."""

    name: str
    duration: float


QUICK = Mode("quick", duration=6.0)  # still past one expiry of the default 5 s cache
DEFAULT = Mode("default", duration=10.0)


@dataclass(frozen=True, slots=True)
class Scenario:
    """``tasks`` tasks sharing one breaker, making ``CALLS`` calls between them."""

    key: str
    title: str
    tasks: int


SCENARIOS = (
    Scenario("one_task", "one task", 1),
    Scenario("concurrent_tasks", f"{TASKS:,} tasks, one breaker", TASKS),
)


@dataclass(slots=True)
class Result:
    """What one scenario cost at the server."""

    scenario: Scenario
    calls: int
    duration: float  # the nominal spread
    spread: float  # from the first call's start to the last call's start, measured
    cache_max_age: float
    requests: Counter[str]
    store_failures: int = 0  # warnings logged: store operations that failed open
    store_failure_examples: list[str] = field(default_factory=list)  # the first few

    @property
    def reads(self) -> int:
        return _moto.reads(self.requests)

    @property
    def writes(self) -> int:
        return _moto.writes(self.requests)

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


async def healthy() -> int:
    """The downstream: answers at once, but yields to the event loop like a real call."""
    await anyio.lowlevel.checkpoint()
    return 1


class _WarningCounter(logging.Handler):
    """Counts the warnings the ``aiocircuit`` logger emits (store failures), keeping the
    first few."""

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


async def _run_scenario(
    server: _moto.CountingMotoServer, table: str, scenario: Scenario, duration: float
) -> Result:
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
        pacer = _Pacer(anyio.current_time(), duration / CALLS)
        async with anyio.create_task_group() as tg:
            for task in range(scenario.tasks):
                tg.start_soon(pacer.calls, protected, task, scenario.tasks, per_task)
        spread = pacer.last_start - pacer.start
        requests = server.snapshot()
        requests.subtract(before)
    finally:
        logger.removeHandler(warnings)
        await store.aclose()
    return Result(
        scenario=scenario,
        calls=per_task * scenario.tasks,
        duration=duration,
        spread=spread,
        cache_max_age=config.local_cache_max_age,
        requests=+requests,  # drop operations that did not occur
        store_failures=warnings.count,
        store_failure_examples=warnings.first,
    )


async def _measure(server: _moto.CountingMotoServer, duration: float) -> list[Result]:
    from aiocircuit.persistence.dynamodb import DynamoDBPersistence

    table = f"benchmark-store-traffic-{os.getpid()}"
    await DynamoDBPersistence.create_table(table, endpoint_url=server.url)
    results = []
    for scenario in SCENARIOS:
        print(f"  {scenario.title}: {CALLS:,} calls over {duration:g} s ...", flush=True)
        results.append(await _run_scenario(server, table, scenario, duration))
    return results


# -- report ------------------------------------------------------------------------------

_HEADERS = ("scenario", "calls", "spread s", "GetItem", "UpdateItem", "PutItem", "other", "bound")
_WIDTHS = (26, 8, 9, 8, 11, 8, 6, 6)


def _line(cells: tuple[str, ...]) -> str:
    name, *numbers = cells
    padded = (c.rjust(w) for c, w in zip(numbers, _WIDTHS[1:], strict=True))
    return "  ".join((name.ljust(_WIDTHS[0]), *padded)).rstrip()


def _table(results: list[Result]) -> str:
    header = _line(_HEADERS)
    lines = [header, "-" * len(header)]
    for r in results:
        known = r.requests["GetItem"] + r.requests["UpdateItem"] + r.requests["PutItem"]
        lines.append(
            _line(
                (
                    r.scenario.title,
                    f"{r.calls:,}",
                    f"{r.spread:.2f}",
                    str(r.requests["GetItem"]),
                    str(r.requests["UpdateItem"]),
                    str(r.requests["PutItem"]),
                    str(r.requests.total() - known),
                    str(r.read_bound),
                )
            )
        )
    return "\n".join(lines)


def _verdicts(results: list[Result]) -> list[str]:
    lines = []
    for r in results:
        met = r.reads_met and r.writes_met
        verdict = "target met:   " if met else "TARGET MISSED:"
        bound = f"ceil({r.bound_duration:.4g} / {r.cache_max_age:g}) + 1 = {r.read_bound}"
        lines.append(
            f"{verdict} {r.scenario.title + ':':<27} {r.reads} reads (bound {bound}) "
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
    return lines


def _report_json(mode: Mode, duration: float, results: list[Result], elapsed: float) -> Any:
    return {
        "benchmark": "store_traffic",
        "target": (
            "per scenario: 0 writes, and at most ceil(duration / local_cache_max_age) + 1 "
            "reads, counted at the (moto) server"
        ),
        "mode": mode.name,
        "duration_seconds": duration,
        "calls_per_scenario": CALLS,
        "elapsed_seconds": round(elapsed, 1),
        "environment": {
            "python": sys.version,
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        },
        "scenarios": [
            {
                "scenario": r.scenario.key,
                "title": r.scenario.title,
                "tasks": r.scenario.tasks,
                "calls": r.calls,
                "spread_seconds": round(r.spread, 3),
                "local_cache_max_age": r.cache_max_age,
                "requests": dict(sorted(r.requests.items())),
                "reads": r.reads,
                "writes": r.writes,
                "read_bound": r.read_bound,
                "reads_target_met": r.reads_met,
                "writes_target_met": r.writes_met,
                "store_failures": r.store_failures,
                "store_failure_examples": r.store_failure_examples,
            }
            for r in results
        ],
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks store-traffic",
        description=f"DynamoDB requests per {CALLS:,} healthy calls in one process, paced "
        "over real time, counted at an in-process moto server.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"spread the calls over {QUICK.duration:g} s instead of {DEFAULT.duration:g} s",
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="spread the calls over this many seconds"
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_PATH, help="where to write the JSON results"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run both scenarios, print the table and verdicts, write the JSON. 0 when they ran,
    whatever the counts; 1 when moto or aioboto3 is missing."""
    args = _parse_args(argv)
    mode = QUICK if args.quick else DEFAULT
    duration = args.duration if args.duration is not None else mode.duration
    missing = _moto.missing_requirements()
    if missing:
        print(
            f"store-traffic: NOT RUN: needs {', '.join(missing)} ({_moto.INSTALL_HINT})",
            file=sys.stderr,
        )
        return 1
    print(
        f"aiocircuit store traffic on DynamoDB (moto): {mode.name} mode, {CALLS:,} healthy "
        f"calls per scenario over {duration:g} s",
        flush=True,
    )
    started = time.perf_counter()
    with _moto.CountingMotoServer() as server:
        results = anyio.run(functools.partial(_measure, server, duration), backend="asyncio")
    elapsed = time.perf_counter() - started

    print()
    print(_table(results))
    print()
    print(
        "Requests counted at the moto server from each scenario's first call to its last,\n"
        "with a fresh store and breaker per scenario (default config, local_cache_max_age="
        f"{results[0].cache_max_age:g} s).\n"
        "spread: from the first call's start to the last's. bound: the most reads allowed,\n"
        "ceil(duration / local_cache_max_age) + 1; the target for writes is 0."
    )
    print()
    for line in _verdicts(results):
        print(line)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = _report_json(mode, duration, results, elapsed)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults written to {args.output} ({elapsed:.0f} s)")
    return 0
