"""Concurrent load against a real HTTP server: throughput with a breaker over without.

A breaker sits on the path of every request a service makes, so what it costs under load
is the question users ask first. The target: with aiocircuit in the path, a client
keeps at least 0.97 of the throughput it has without it, through httpx.AsyncClient and
aiohttp.ClientSession, called by 1, 100 and 1,000 concurrent tasks.

How it measures, and why:

* The downstream is ``benchmarks/_downstream.py``: an aiohttp server in its own OS process
  on 127.0.0.1, answering ``GET /ok`` with 200 at once. Its work does not share the
  clients' interpreter, so what differs between variants is the client side: the HTTP
  client plus the breaker. On this 2-core machine the clients are the bottleneck (httpx
  far more than aiohttp), which is where a breaker's cost would show.
* Variants per client: no breaker (the baseline); aiocircuit wired the way users wire it,
  ``CircuitBreakerTransport`` around ``httpx.AsyncHTTPTransport`` and
  ``CircuitBreakerMiddleware`` in the session's ``middlewares`` (as docs/recipes/ show,
  an in-memory store, the default config), and ``@breaker`` on the request coroutine
  (in-memory store, default config); each async-capable peer's decorator on the same
  coroutine, configured as closed_path.py does; and, in the default mode, a second
  client without a breaker (the A/A control: how far two identical variants drift apart
  in this run). A request coroutine sends ``GET /ok``, reads the whole body and returns
  the status; any status but 200, and any exception, is counted as an error.
* Every variant has a client of its own, with the same explicit limits: 10 connections
  (see ``CONNECTIONS`` for why not the libraries' default of 100), keep-alive longer than
  the run, a 30 s timeout (requests queued behind 1,000 tasks must not time out). Each
  client is warmed before timing (all its connections opened, then a burst from 100
  tasks) and reused for every sample, so no sample pays for connecting.
* A sample is a fixed number of calls shared by N tasks (1, 100 or 1,000): each task
  takes the next call until none are left, and the sample lasts from creating the tasks
  to the last call's end. Its throughput is calls over that time. A fixed count rather
  than a fixed duration, because with 1,000 tasks about 1,000 requests are always
  outstanding: stopping at a deadline would mean draining (or cancelling, which some
  peers count as failures) that many requests anyway. So a sample is at least one call
  per task, and otherwise about ``sample_seconds`` of the baseline's throughput, measured
  by a probe before the rounds.
* Samples are interleaved in rounds. In each round the (client, tasks) cells come in a
  random order, and within a cell every variant once, in a random order, so a variant and
  its baseline run well under a second apart and mostly share the machine's state (other
  jobs share these two cores). The verdict is the median over rounds of the per-round
  ratio, variant over baseline of the same client and tasks; the table shows its IQR.
  The garbage collector runs between samples, so one sample's garbage is not collected
  in another's time.
* Beside it, the same ratio from calls per second of this process's CPU time ("CPU
  ratio"). It is blind to the time the client spends descheduled by other jobs, the
  largest noise here, so it is the steadier figure on a busy machine; it is stricter than
  throughput where the client waits on the server (one task), since it leaves the
  server's time out. It is reported, not judged.
* httpx serves 1,000 queued tasks at only about 500 requests/s here (httpcore's pool
  scans every queued request against every connection each time one joins or leaves),
  so one sample at that cell takes about 2 s whatever its size. Each cell therefore
  runs rounds until its own time budget (``cell_seconds``) is spent, at least
  ``min_rounds``; the table says how many it got. In quick mode that is a single round
  for the slowest cells: quick mode is a smoke test, the default mode gives the verdict.

pybreaker and Powertools are sync-only and are shown n/a with the reason. The exit status
is 0 whatever the ratios: a benchmark on shared hardware must not fail CI on noise.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import math
import random
import statistics
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ._downstream import Downstream
from ._report import (
    NA,
    Headline,
    Progress,
    charts_unavailable,
    colour,
    missing,
    na,
    pyplot,
    save_chart,
    table,
    write_json,
)

SCENARIO = "http-load"
TARGET_RATIO = 0.97
# A median of fewer rounds is not judged: one sample of a cell on a busy machine has read
# anywhere from 0.3 to 1.9 (quick mode gives its slowest cells a single round).
MIN_JUDGED_ROUNDS = 3
LEVELS = (1, 100, 1000)
CLIENTS = ("httpx", "aiohttp")
# Connections per client, every variant alike. Not the libraries' default of 100: httpcore
# (under httpx) polls every idle pooled connection for readability each time a request
# joins or leaves its pool, so a warm pool of 100 made httpx about 6x slower in one
# measurement here (150 requests/s from one task, against 860 with 10). 10 keeps both
# clients at their fastest, which is also where a breaker's cost is the largest share.
CONNECTIONS = 10
TIMEOUT = 30.0  # seconds; generous, so that queueing behind 1,000 tasks never times out
KEEPALIVE = 600.0  # seconds an idle pooled connection is kept: longer than any run
PATH = "/ok"

Request = Callable[[], Awaitable[int]]
"""A request coroutine function: one ``GET /ok``, body read; returns the status."""


@dataclass(frozen=True, slots=True)
class Mode:
    """How much to measure. Each (client, tasks) cell runs at least ``min_rounds``
    rounds, then more (up to ``rounds``) while its samples have taken less than
    ``cell_seconds`` and the rounds past ``min_rounds`` of all cells together less than
    ``extra_seconds`` (a machine busier than planned for). A sample lasts about
    ``sample_seconds``, or one call per task if that is longer."""

    name: str
    rounds: int
    min_rounds: int
    sample_seconds: float
    cell_seconds: float
    extra_seconds: float
    control: bool  # measure the A/A control variant


QUICK = Mode(
    "quick",
    rounds=8,
    min_rounds=1,
    sample_seconds=0.04,
    cell_seconds=1.0,
    extra_seconds=3.0,
    control=False,
)
DEFAULT = Mode(
    "default",
    rounds=60,
    min_rounds=4,
    sample_seconds=0.05,
    cell_seconds=20.0,
    extra_seconds=150.0,
    control=True,
)


# -- variants ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kind:
    """One way of calling through (or without) a breaker, the same for both clients."""

    key: str
    breaker: str  # "no breaker", "aiocircuit" or a peer's distribution name
    labels: dict[str, str]  # per client: what the table and chart call it


BASELINE = Kind("baseline", "no breaker", {"httpx": "no breaker", "aiohttp": "no breaker"})
# A second client without a breaker, measured like any variant: its ratio to the baseline
# shows how far two identical variants drift apart in this run (default mode only).
CONTROL = Kind(
    "control",
    "no breaker",
    {"httpx": "no breaker, 2nd client (A/A)", "aiohttp": "no breaker, 2nd client (A/A)"},
)
CONTRIB = Kind(
    "aiocircuit-contrib",
    "aiocircuit",
    {
        "httpx": "aiocircuit CircuitBreakerTransport",
        "aiohttp": "aiocircuit CircuitBreakerMiddleware",
    },
)
DECORATOR = Kind(
    "aiocircuit-decorator",
    "aiocircuit",
    {"httpx": "aiocircuit @breaker", "aiohttp": "aiocircuit @breaker"},
)
PEER_KINDS = {
    peer: Kind(peer, peer, {"httpx": label, "aiohttp": label})
    for peer, label in (
        ("purgatory", "purgatory @factory(name)"),
        ("aiobreaker", "aiobreaker @breaker"),
        ("circuitbreaker", "circuitbreaker @circuit"),
        ("pybreaker", "pybreaker @breaker"),
        ("aws-lambda-powertools", "powertools @circuit_breaker"),
    )
}
KINDS = (BASELINE, CONTROL, CONTRIB, DECORATOR, *PEER_KINDS.values())
KIND_BY_KEY = {kind.key: kind for kind in KINDS}

# Why the sync-only peers cannot run this scenario, checked against their source
# (pybreaker 1.4.1, aws-lambda-powertools 3.37) and by running pybreaker's decorator on an
# async def: it returns the un-awaited coroutine and counts a success at once.
PYBREAKER_NA = (
    "sync-only: its decorator calls an async def without awaiting it (the request runs "
    "outside the breaker, which counts a success at once and never sees a failure); its "
    "only async path, call_async / __pybreaker_call_async, is a Tornado gen.coroutine and "
    "raises ImportError 'No module named tornado' without tornado"
)
POWERTOOLS_NA = (
    "sync-only: circuit_breaker's wrapper is a plain def that calls the function without "
    "awaiting it (CircuitBreakerHandler._call_closed), so on an async def the request runs "
    "after the breaker has counted a success; and its only store is DynamoDB through "
    "blocking boto3, which would stall the event loop on every cache miss"
)
SHORT_NA = {
    "pybreaker": "sync-only (its async path needs Tornado)",
    "aws-lambda-powertools": "sync-only (does not await; blocking boto3 store)",
}


class _NotAvailable(Exception):
    """A variant that cannot be measured here, with the reason as its message."""


@dataclass(eq=False, slots=True)
class Variant:
    """One breaker kind on one client: its own client object and request coroutine."""

    client: str
    kind: Kind
    request: Request

    @property
    def label(self) -> str:
        return self.kind.labels[self.client]


async def _httpx_client(stack: AsyncExitStack, *, contrib: bool) -> Any:
    import httpx

    limits = httpx.Limits(
        max_connections=CONNECTIONS,
        max_keepalive_connections=CONNECTIONS,
        keepalive_expiry=KEEPALIVE,
    )
    transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport(limits=limits)
    if contrib:
        from aiocircuit.contrib.httpx import CircuitBreakerTransport
        from aiocircuit.persistence import InMemoryPersistence

        # As docs/recipes/httpx.md wires it: a store, the default config.
        transport = CircuitBreakerTransport(transport, persistence_store=InMemoryPersistence())
    client = httpx.AsyncClient(transport=transport, timeout=TIMEOUT)
    return await stack.enter_async_context(client)


def _httpx_request(client: Any, url: str) -> Request:
    async def request() -> int:
        response = await client.get(url)
        status: int = response.status_code
        return status

    return request


async def _aiohttp_session(stack: AsyncExitStack, *, contrib: bool) -> Any:
    import aiohttp

    middlewares: tuple[Any, ...] = ()
    if contrib:
        from aiocircuit.contrib.aiohttp import CircuitBreakerMiddleware
        from aiocircuit.persistence import InMemoryPersistence

        # As docs/recipes/aiohttp.md wires it: a store, the default config.
        middlewares = (CircuitBreakerMiddleware(persistence_store=InMemoryPersistence()),)
    connector = aiohttp.TCPConnector(
        limit=CONNECTIONS, limit_per_host=CONNECTIONS, keepalive_timeout=KEEPALIVE
    )
    session = aiohttp.ClientSession(
        connector=connector,
        middlewares=middlewares,
        timeout=aiohttp.ClientTimeout(total=TIMEOUT),
    )
    return await stack.enter_async_context(session)


def _aiohttp_request(session: Any, url: str) -> Request:
    async def request() -> int:
        async with session.get(url) as response:
            await response.read()
            status: int = response.status
            return status

    return request


async def _plain_request(client: str, stack: AsyncExitStack, url: str, *, contrib: bool) -> Request:
    """A request coroutine on a fresh client of its own (with the contrib integration in
    it when ``contrib``)."""
    if client == "httpx":
        return _httpx_request(await _httpx_client(stack, contrib=contrib), url)
    return _aiohttp_request(await _aiohttp_session(stack, contrib=contrib), url)


# Each peer is configured like aiocircuit's defaults (5 failures trip, 30 s to recovery),
# as in closed_path.py, and imported by name: none of them is a dependency.


def _unavailable(kind: Kind) -> str | None:
    """Why ``kind`` cannot run here at all, known before any client is opened."""
    if kind.breaker == "pybreaker":
        return PYBREAKER_NA
    if kind.breaker == "aws-lambda-powertools":
        return POWERTOOLS_NA
    if kind.breaker == "no breaker":
        return None
    return missing(kind.breaker)


async def _decorate(kind: Kind, client: str, request: Request) -> Request:
    """``request`` wrapped by ``kind``'s decorator."""
    name = f"http-load-{client}"
    protected: Request
    if kind is DECORATOR:
        from aiocircuit import CircuitBreaker
        from aiocircuit.persistence import InMemoryPersistence

        protected = CircuitBreaker(name, InMemoryPersistence())(request)
    elif kind.breaker == "purgatory":
        purgatory = importlib.import_module("purgatory")
        factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
        await factory.initialize()
        # Its decorator looks the breaker up in its repository on every call, by design.
        protected = factory(name)(request)
    elif kind.breaker == "aiobreaker":
        aiobreaker = importlib.import_module("aiobreaker")
        breaker = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=30))
        protected = breaker(request)
    elif kind.breaker == "circuitbreaker":
        circuitbreaker = importlib.import_module("circuitbreaker")
        # Distinct names: circuitbreaker registers every breaker in a process-wide monitor.
        decorator = circuitbreaker.circuit(failure_threshold=5, recovery_timeout=30, name=name)
        protected = decorator(request)
    else:  # pragma: no cover - every decorating kind is handled above
        raise AssertionError(kind)
    return protected


async def _variant(kind: Kind, client: str, stack: AsyncExitStack, url: str) -> Variant:
    reason = _unavailable(kind)
    if reason is not None:
        raise _NotAvailable(reason)
    request = await _plain_request(client, stack, url, contrib=kind is CONTRIB)
    if kind not in (BASELINE, CONTROL, CONTRIB):
        request = await _decorate(kind, client, request)
    return Variant(client, kind, request)


# -- one sample --------------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    """``calls`` calls by ``tasks`` tasks in ``seconds`` of wall time and ``cpu_seconds``
    of this process's CPU time; ``errors`` by kind."""

    tasks: int
    calls: int
    seconds: float
    cpu_seconds: float
    errors: Counter[str]

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds

    @property
    def cpu_throughput(self) -> float:
        """Calls per second of the client process's CPU time."""
        return self.calls / self.cpu_seconds if self.cpu_seconds > 0 else math.nan


async def _sample(request: Request, tasks: int, calls: int) -> Sample:
    """``calls`` calls of ``request`` shared by ``tasks`` concurrent tasks, timed from
    creating the tasks to the end of the last call. Every status but 200, and every
    exception, is an error (and the call still counts: it took its time)."""
    remaining = calls
    errors: Counter[str] = Counter()

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                status = await request()
            except Exception as exc:
                errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            else:
                if status != 200:
                    errors[f"HTTP {status}"] += 1

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return Sample(tasks, calls, seconds, cpu_seconds, errors)


# -- the run -----------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Cell:
    """One client at one concurrency: every variant's samples, one per round."""

    client: str
    tasks: int
    calls: int = 0  # per sample, the same for every variant of the cell
    rounds: int = 0  # planned from the probe; then the rounds actually run
    spent_seconds: float = 0.0  # wall time of its samples so far
    samples: dict[str, list[Sample]] = field(default_factory=dict)  # by kind key


@dataclass(slots=True)
class Measurement:
    mode: Mode
    seed: int
    variants: list[Variant]
    cells: list[Cell]
    not_available: dict[str, dict[str, str]]  # kind key -> client -> reason
    warm_up_errors: dict[str, dict[str, int]]  # "client/kind" -> errors
    elapsed_seconds: float = math.nan


async def _warm(variant: Variant) -> Counter[str]:
    """Open all ``CONNECTIONS`` connections of the variant's client, then run its first
    calls from 100 tasks (which find them pooled); the errors of both."""
    opening = await _sample(variant.request, CONNECTIONS, CONNECTIONS)
    queued = await _sample(variant.request, LEVELS[1], LEVELS[1])
    return opening.errors + queued.errors


def _plan(mode: Mode, cell: Cell, rate: float, variants: int) -> None:
    """Size the cell's samples from the baseline's ``rate``, and estimate its rounds (for
    the progress bar: the rounds really run follow the time really spent)."""
    cell.calls = max(cell.tasks, round(rate * mode.sample_seconds))
    budget_rounds = math.floor(mode.cell_seconds * rate / (variants * cell.calls))
    cell.rounds = max(mode.min_rounds, min(mode.rounds, budget_rounds))


def _runs(mode: Mode, cell: Cell, round_number: int, extra_spent: float) -> bool:
    """Whether ``cell`` takes part in round ``round_number``: always up to ``min_rounds``,
    then while its own time budget and the budget of extra rounds last."""
    if round_number < mode.min_rounds:
        return True
    return (
        round_number < mode.rounds
        and cell.spent_seconds < mode.cell_seconds
        and extra_spent < mode.extra_seconds
    )


async def _measure(mode: Mode, seed: int, url: str) -> Measurement:
    started = time.perf_counter()
    not_available: dict[str, dict[str, str]] = {}
    warm_up_errors: dict[str, dict[str, int]] = {}
    async with AsyncExitStack() as stack:
        variants: list[Variant] = []
        for client in CLIENTS:
            for kind in KINDS:
                if kind is CONTROL and not mode.control:
                    continue
                try:
                    variants.append(await _variant(kind, client, stack, url))
                except _NotAvailable as exc:
                    not_available.setdefault(kind.key, {})[client] = str(exc)
                except Exception as exc:  # a broken peer is reported, never fatal
                    reason = f"{type(exc).__name__}: {exc}"
                    not_available.setdefault(kind.key, {})[client] = reason

        cells = [Cell(client, tasks) for client in CLIENTS for tasks in LEVELS]
        steps = len(variants) + 2 * len(CLIENTS)
        with Progress(f"{SCENARIO}: warm-up", steps) as progress:
            for variant in list(variants):
                errors = await _warm(variant)
                progress.advance(detail=f"{variant.client} {variant.label}")
                if errors:
                    # A breaker that cannot make clean calls is not measured; the
                    # baseline stays, its errors shown.
                    warm_up_errors[f"{variant.client}/{variant.kind.key}"] = dict(errors)
                    if variant.kind is not BASELINE:
                        not_available.setdefault(variant.kind.key, {})[variant.client] = (
                            f"{errors.total()} warm-up calls failed, e.g. {next(iter(errors))}"
                        )
                        variants.remove(variant)
            # The baseline's throughput sizes each cell's samples; 1,000 tasks are planned
            # from 100 (both queue for the same connections), which saves a long probe.
            for client in CLIENTS:
                baseline = next(v for v in variants if v.client == client and v.kind is BASELINE)
                count = sum(1 for v in variants if v.client == client)
                rates = {}
                for tasks, calls in ((LEVELS[0], 100), (LEVELS[1], 3 * LEVELS[1])):
                    rates[tasks] = (await _sample(baseline.request, tasks, calls)).throughput
                    progress.advance(detail=f"{client} probe, {_tasks(tasks)}")
                for cell in cells:
                    if cell.client == client:
                        rate = rates[min(cell.tasks, LEVELS[1])]
                        _plan(mode, cell, rate, count)

        rng = random.Random(seed)
        total = sum(
            cell.rounds * sum(1 for v in variants if v.client == cell.client) for cell in cells
        )
        extra_spent = 0.0  # seconds of samples in rounds past min_rounds
        for cell in cells:
            cell.rounds = 0
        with Progress(SCENARIO, total) as progress:
            for round_number in range(mode.rounds):
                order = [cell for cell in cells if _runs(mode, cell, round_number, extra_spent)]
                if not order:
                    break
                rng.shuffle(order)
                for cell in order:
                    mine = [v for v in variants if v.client == cell.client]
                    rng.shuffle(mine)
                    for variant in mine:
                        gc.collect()
                        sample = await _sample(variant.request, cell.tasks, cell.calls)
                        cell.samples.setdefault(variant.kind.key, []).append(sample)
                        cell.spent_seconds += sample.seconds
                        if round_number >= mode.min_rounds:
                            extra_spent += sample.seconds
                        progress.advance(
                            detail=f"round {round_number + 1}: {cell.client}, "
                            f"{_tasks(cell.tasks)}, {variant.label}"
                        )
                    cell.rounds += 1
    return Measurement(
        mode=mode,
        seed=seed,
        variants=variants,
        cells=cells,
        not_available=not_available,
        warm_up_errors=warm_up_errors,
        elapsed_seconds=time.perf_counter() - started,
    )


# -- analysis ----------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One variant in one cell. ``ratio`` is the median over rounds of its throughput
    over the baseline's in the same round: the verdict."""

    cell: Cell
    kind: Kind
    label: str
    median_throughput: float
    round_ratios: list[float]
    ratio: float | None  # None for the baseline
    quartiles: tuple[float, float] | None
    # The same ratio from calls per second of the client process's CPU time: blind to
    # time the process spent descheduled by other jobs on the machine, and stricter where
    # the client waits on the server (one task), since it leaves the server's time out.
    cpu_ratio: float | None
    cpu_quartiles: tuple[float, float] | None
    calls: int
    errors: Counter[str]
    target_met: bool | None  # None unless aiocircuit


def _quartiles(values: list[float]) -> tuple[float, float] | None:
    if len(values) < 2:
        return None
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q1, q3


def _analyse(measurement: Measurement) -> list[Row]:
    rows = []
    for cell in measurement.cells:
        baseline = cell.samples[BASELINE.key]
        for variant in measurement.variants:
            if variant.client != cell.client:
                continue
            samples = cell.samples[variant.kind.key]
            errors: Counter[str] = Counter()
            for sample in samples:
                errors.update(sample.errors)
            ratio: float | None = None
            cpu_ratio: float | None = None
            round_ratios: list[float] = []
            cpu_round_ratios: list[float] = []
            met: bool | None = None
            if variant.kind is not BASELINE:
                paired = list(zip(samples, baseline, strict=True))
                round_ratios = [s.throughput / b.throughput for s, b in paired]
                ratio = statistics.median(round_ratios)
                cpu_round_ratios = [
                    s.cpu_throughput / b.cpu_throughput
                    for s, b in paired
                    if s.cpu_seconds > 0 and b.cpu_seconds > 0
                ]
                cpu_ratio = statistics.median(cpu_round_ratios) if cpu_round_ratios else None
                if variant.kind.breaker == "aiocircuit":
                    judged = cell.rounds >= MIN_JUDGED_ROUNDS
                    met = (ratio >= TARGET_RATIO and not errors) if judged else None
            rows.append(
                Row(
                    cell=cell,
                    kind=variant.kind,
                    label=variant.label,
                    median_throughput=statistics.median(s.throughput for s in samples),
                    round_ratios=round_ratios,
                    ratio=ratio,
                    quartiles=_quartiles(round_ratios),
                    cpu_ratio=cpu_ratio,
                    cpu_quartiles=_quartiles(cpu_round_ratios),
                    calls=sum(s.calls for s in samples),
                    errors=errors,
                    target_met=met,
                )
            )
    return rows


# -- report ------------------------------------------------------------------------------

_HEADERS = (
    "client  tasks  variant",
    "req/s",
    "ratio",
    "round IQR",
    "CPU ratio",
    "rounds",
    "calls",
    "errors",
    f">= {TARGET_RATIO}",
)


def _verdict(row: Row) -> str:
    if row.target_met is None:
        aiocircuit = row.kind.breaker == "aiocircuit"
        return "not judged" if aiocircuit and row.cell.rounds < MIN_JUDGED_ROUNDS else ""
    return "met" if row.target_met else "MISSED"


def _tasks(tasks: int) -> str:
    return f"{tasks:,} task" if tasks == 1 else f"{tasks:,} tasks"


def _iqr(quartiles: tuple[float, float] | None) -> str:
    return "-" if quartiles is None else f"{quartiles[0]:.3f}-{quartiles[1]:.3f}"


def _table(measurement: Measurement, rows: list[Row]) -> str:
    lines: list[list[object]] = []
    for client in CLIENTS:
        for row in rows:
            if row.cell.client != client:
                continue
            baseline = row.ratio is None
            lines.append(
                [
                    f"{client:<7} {row.cell.tasks:>5}  {row.label}",
                    f"{row.median_throughput:,.0f}",
                    "-" if row.ratio is None else f"{row.ratio:.3f}",
                    "-" if baseline else _iqr(row.quartiles),
                    "-" if row.cpu_ratio is None else f"{row.cpu_ratio:.3f}",
                    row.cell.rounds,
                    f"{row.calls:,}",
                    row.errors.total(),
                    _verdict(row),
                ]
            )
        for kind in KINDS:
            if client in measurement.not_available.get(kind.key, {}):
                label = f"{client:<7} {'all':>5}  {kind.labels[client]}"
                lines.append([label, NA, NA, "", NA, "", "", "", ""])
    return table(_HEADERS, lines)


def _worst(rows: list[Row], client: str) -> Row | None:
    """The client's aiocircuit row with the lowest ratio, among the judged ones if any."""
    mine = [r for r in rows if r.cell.client == client and r.kind.breaker == "aiocircuit"]
    judged = [r for r in mine if r.target_met is not None]
    return min(judged or mine, key=lambda r: r.ratio or 0.0) if mine else None


def _headlines(measurement: Measurement, rows: list[Row]) -> list[Headline]:
    headlines = []
    for client in CLIENTS:
        worst = _worst(rows, client)
        what = f"{client}: throughput with aiocircuit over without, worst of 1/100/1,000 tasks"
        target = f">= {TARGET_RATIO} (transport/middleware and @breaker)"
        if worst is None or worst.ratio is None:
            headlines.append(Headline(what, NA, target, None))
            continue
        verdicts = [
            r.target_met for r in rows if r.cell.client == client and r.kind.breaker == "aiocircuit"
        ]
        value = f"{worst.ratio:.3f} ({worst.label}, {_tasks(worst.cell.tasks)})"
        met: bool | None = all(verdicts)
        if None in verdicts:
            # Too few rounds somewhere (quick mode): a miss among the judged cells still
            # counts, anything else is not a verdict.
            met = False if False in verdicts else None
            value += f"; cells with < {MIN_JUDGED_ROUNDS} rounds not judged"
        headlines.append(Headline(what, value, target, met))
    controls = [r for r in rows if r.kind is CONTROL and r.ratio is not None]
    what = "A/A control: no breaker over no breaker (2nd client), per cell: the run's noise"
    if controls:
        farthest = max(controls, key=lambda r: abs(1.0 - (r.ratio or 1.0)))
        low = min(r.ratio or 1.0 for r in controls)
        high = max(r.ratio or 1.0 for r in controls)
        value = (
            f"{low:.3f} to {high:.3f} (farthest from 1: {farthest.cell.client}, "
            f"{_tasks(farthest.cell.tasks)})"
        )
        headlines.append(Headline(what, value))
    else:
        headlines.append(Headline(what, f"{NA} (default mode only)"))
    errors = sum(r.errors.total() for r in rows)
    calls = sum(r.calls for r in rows)
    headlines.append(
        Headline(
            "timed calls that were not a 200 response (every variant)",
            f"{errors:,} of {calls:,}",
            "0",
            errors == 0,
        )
    )
    return headlines


def _payload(measurement: Measurement, rows: list[Row]) -> dict[str, Any]:
    na_json = {
        key: {client: na(reason) for client, reason in clients.items()}
        for key, clients in measurement.not_available.items()
    }
    return {
        "verdict_basis": (
            "median over rounds of the throughput ratio, variant over the no-breaker "
            "baseline of the same client and tasks, each ratio taken within one round"
        ),
        "target_ratio": TARGET_RATIO,
        "min_judged_rounds": MIN_JUDGED_ROUNDS,
        "mode": measurement.mode.name,
        "seed": measurement.seed,
        "elapsed_seconds": round(measurement.elapsed_seconds, 1),
        "connections_per_client": CONNECTIONS,
        "timeout_seconds": TIMEOUT,
        "levels": list(LEVELS),
        "clients": list(CLIENTS),
        "warm_up_errors": measurement.warm_up_errors,
        "not_available": na_json,
        "cells": [
            {
                "client": cell.client,
                "tasks": cell.tasks,
                "calls_per_sample": cell.calls,
                "rounds": cell.rounds,
                "variants": [
                    {
                        "kind": row.kind.key,
                        "breaker": row.kind.breaker,
                        "label": row.label,
                        "median_requests_per_second": round(row.median_throughput, 1),
                        "ratio": None if row.ratio is None else round(row.ratio, 4),
                        "ratio_quartiles": row.quartiles,
                        "cpu_ratio": None if row.cpu_ratio is None else round(row.cpu_ratio, 4),
                        "cpu_ratio_quartiles": row.cpu_quartiles,
                        "round_ratios": [round(r, 4) for r in row.round_ratios],
                        "calls": row.calls,
                        "errors": dict(row.errors),
                        "target_met": row.target_met,
                        "samples": [
                            {
                                "calls": s.calls,
                                "seconds": round(s.seconds, 4),
                                "cpu_seconds": round(s.cpu_seconds, 4),
                            }
                            for s in cell.samples[row.kind.key]
                        ],
                    }
                    for row in rows
                    if row.cell is cell
                ],
            }
            for cell in measurement.cells
        ],
    }


def _legend_label(kind: Kind) -> str:
    if kind is CONTRIB:
        return "aiocircuit CircuitBreakerTransport (httpx) / CircuitBreakerMiddleware (aiohttp)"
    return kind.labels["httpx"]


def _chart(measurement: Measurement, rows: list[Row]) -> str:
    reason = charts_unavailable()
    if reason is not None:
        return f"chart skipped: {reason}"
    plt = pyplot()
    figure = plt.figure(figsize=(11, 5.6))
    # A bottom row of its own for the legend and the n/a notes, so that save_chart's
    # tight_layout keeps room for them.
    grid = figure.add_gridspec(2, len(CLIENTS), height_ratios=(5, 1.1))
    axes = [figure.add_subplot(grid[0, i]) for i in range(len(CLIENTS))]
    notes_axis = figure.add_subplot(grid[1, :])
    notes_axis.axis("off")
    kinds = [k for k in KINDS if k is not BASELINE and any(r.kind is k for r in rows)]
    measured = [r.ratio for r in rows if r.ratio is not None]
    low = min(0.8, math.floor((min(measured, default=1.0) - 0.03) * 20) / 20)
    high = 1.1  # a bar above is cut; its value is printed on it
    width = 0.8 / max(1, len(kinds))
    handles: dict[str, Any] = {}
    for axis, client in zip(axes, CLIENTS, strict=True):
        for index, kind in enumerate(kinds):
            for level_index, tasks in enumerate(LEVELS):
                row = next(
                    (
                        r
                        for r in rows
                        if r.cell.client == client and r.cell.tasks == tasks and r.kind is kind
                    ),
                    None,
                )
                if row is None or row.ratio is None:
                    continue
                x = level_index + (index - (len(kinds) - 1) / 2) * width
                q1, q3 = row.quartiles or (row.ratio, row.ratio)
                bars = axis.bar(
                    [x],
                    [row.ratio],
                    width,
                    yerr=[[max(0.0, row.ratio - q1)], [max(0.0, q3 - row.ratio)]],
                    capsize=2,
                    error_kw={"elinewidth": 0.8, "ecolor": "#444444"},
                    color=colour(kind.breaker),
                    hatch="//" if kind is CONTRIB else None,
                    edgecolor="white" if kind is CONTRIB else None,
                    alpha=0.55 if kind is CONTROL else 1.0,
                )
                handles.setdefault(kind.key, bars)
                axis.text(
                    x,
                    low + 0.006,
                    f"{row.ratio:.3f}",
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    rotation=90,
                    color="white",
                )
        target = axis.axhline(TARGET_RATIO, color="black", linestyle="--", linewidth=1)
        handles.setdefault("target", target)
        axis.axhline(1.0, color="#999999", linewidth=0.6)
        axis.set_xticks(range(len(LEVELS)), [_tasks(tasks) for tasks in LEVELS])
        axis.set_ylim(low, high)
        axis.set_title(client)
    axes[0].set_ylabel("throughput with breaker / without")
    figure.suptitle(
        "Throughput against a local HTTP server with each breaker, over without "
        f"(median of per-round ratios; whiskers: IQR; {measurement.mode.name} mode, "
        f"{CONNECTIONS} connections per client)",
        fontsize=9,
    )
    labels = {kind.key: _legend_label(kind) for kind in kinds}
    labels["target"] = f"target >= {TARGET_RATIO}"
    notes_axis.legend(
        [handles[key] for key in labels if key in handles],
        [label for key, label in labels.items() if key in handles],
        loc="upper center",
        ncol=3,
        fontsize=7,
        frameon=False,
    )
    notes = [
        f"{KIND_BY_KEY[key].breaker}: n/a, {SHORT_NA.get(key, reason)}"
        for key, clients in measurement.not_available.items()
        for reason in sorted(set(clients.values()))
    ]
    if notes:
        notes_axis.text(
            0.0,
            0.0,
            textwrap.fill("; ".join(notes), 180),
            transform=notes_axis.transAxes,
            fontsize=7,
            ha="left",
            va="bottom",
        )
    return f"chart written to {save_chart(figure, SCENARIO)}"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks http-load",
        description="Throughput through httpx and aiohttp against a local HTTP server with "
        "1, 100 and 1,000 concurrent tasks, with each breaker over without, in the same run.",
    )
    parser.add_argument("--quick", action="store_true", help="a short run (about 25 s)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the round order")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the scenario, print the table, write the JSON and the chart. Always 0."""
    args = _parse_args(argv)
    mode = QUICK if args.quick else DEFAULT
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(
        f"{SCENARIO}: {mode.name} mode, up to {mode.rounds} rounds, ~{mode.sample_seconds} s "
        f"per sample, {CONNECTIONS} connections per client, seed {seed}",
        flush=True,
    )
    with Downstream() as downstream:
        measurement = asyncio.run(_measure(mode, seed, downstream.url + PATH))
    rows = _analyse(measurement)
    headlines = _headlines(measurement, rows)

    print(_table(measurement, rows))
    print(
        "\nreq/s: median over rounds. ratio: throughput over the no-breaker variant of the "
        "same client and tasks,\ntaken within each round, median over rounds (the verdict); "
        "round IQR: its quartiles. CPU ratio:\nthe same from calls per second of the client "
        "process's CPU time (blind to time spent descheduled).\nEvery variant has its own "
        f"client with the same limits ({CONNECTIONS} connections), warmed before timing."
    )
    for key, clients in measurement.not_available.items():
        for reason in sorted(set(clients.values())):
            which = ", ".join(c for c, r in clients.items() if r == reason)
            print(f"n/a: {KIND_BY_KEY[key].labels['httpx']} ({which}): {reason}")
    print()
    for headline in headlines:
        verdict = {True: "met", False: "MISSED", None: "-"}[headline.met]
        target = f" (target {headline.target})" if headline.target else ""
        print(f"{verdict:>6}: {headline.what}: {headline.value}{target}")
    path = write_json(SCENARIO, _payload(measurement, rows), headlines)
    print(f"\nresults written to {path} ({measurement.elapsed_seconds:.0f} s)")
    print(_chart(measurement, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
