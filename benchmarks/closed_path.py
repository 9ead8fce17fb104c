"""Closed-path overhead per call: aiocircuit against hand-written floors, peers for scale.

The cost of a closed, cached circuit is aiocircuit's headline number: on a healthy circuit
a call should pay one clock read and little else. A figure in nanoseconds would mostly
measure this machine, so each call form is compared with a *floor* measured in the same
run: the smallest hand-written wrapper of the same form that still does what any breaker
whose cached state expires must do -- one ``time.monotonic()`` read compared with a
deadline, the call, one counter update. The target: every aiocircuit form costs at most
1.25x its floor's overhead, where overhead is the time per call minus the time of the bare
call.

How it measures, and why:

* One process; the async forms inside one ``anyio.run`` (asyncio backend), each awaited in
  a tight ``for`` loop. The bare call timed the same way carries the loop's own cost, and
  subtracting it leaves the wrapper's.
* Variants are interleaved in many short rounds, in a fresh random order each round. On
  this shared 2-core machine the noise is a state, not a blip: a plain loop runs at one
  speed, then about 1.8x slower for a few tens of milliseconds, then fast again. Samples
  therefore last a millisecond or two, so that every variant sees the same mix of states,
  and a variant, its bare call and its floor mostly share a state within one round. The
  overhead and ratio are taken within each round, and their medians over the rounds kept
  (``_analyse`` shows why that beats dividing whole-run medians).
* Each variant's timing loop is compiled from its own source, as ``timeit`` does, so its
  call sites specialise to that variant alone. CPython 3.11+ specialises a call site to
  the callee it sees; one loop shared by all variants would see a different callee every
  time the variant changed, and whichever ran after whom would pay for it.
* The garbage collector is off while a sample runs, as under ``timeit``.

Each aiocircuit form runs a second time on a breaker whose store is DynamoDB (a moto server
in this process, ``benchmarks/_moto.py``), warmed by one read and cached for the whole run.
A fresh cache must make the store irrelevant, so those variants are held to the same floor,
and to the in-memory breaker's overhead of the same form in the same run (target: about
1.0x, read as at most ``SAME_COST_RATIO``). The moto server counts every request it gets;
the timed part must see none.

Peers run the same trivial call for scale only; they are not part of the verdict. The exit
status is 0 whatever the ratios: a benchmark on shared hardware must not fail CI on noise.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import importlib.metadata
import math
import os
import random
import statistics
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from time import monotonic
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar

import anyio

from aiocircuit import CircuitBreaker, CircuitBreakerConfig, CircuitState
from aiocircuit.persistence import CircuitRecord, InMemoryPersistence, PersistenceStore

from . import _moto, _report

P = ParamSpec("P")
T = TypeVar("T")

Kind = Literal["async", "sync"]
Role = Literal["bare", "floor", "aiocircuit", "peer"]
Store = Literal["memory", "dynamodb"]

TARGET_RATIO = 1.25
# "About the same cost": the DynamoDB breaker's overhead over the in-memory one's. The two
# run the very same fast path, so anything above 1.0x beyond noise would be a defect.
SAME_COST_RATIO = 1.10
CACHE_MAX_AGE = 3600.0  # an hour: the cache stays fresh for the whole run
SCENARIO = "closed-path"
RESULTS_PATH = _report.RESULTS_DIR / f"{SCENARIO}.json"
POWERTOOLS_NA = "its only store is DynamoDB, and the moto server is not available"


@dataclass(frozen=True, slots=True)
class Mode:
    """How long to measure: rounds of every variant, each sample lasting about
    ``sample_seconds``."""

    name: str
    rounds: int
    sample_seconds: float


QUICK = Mode("quick", rounds=600, sample_seconds=0.001)
DEFAULT = Mode("default", rounds=1500, sample_seconds=0.002)


# -- the trivial call ------------------------------------------------------------------


async def trivial() -> int:
    """The downstream call every async variant wraps: as cheap as a coroutine gets."""
    return 1


def trivial_sync() -> int:
    """The downstream call every sync variant wraps."""
    return 1


# -- floors: the least a breaker with an expiring cache can do ---------------------------


class _FloorState:
    """What a minimal breaker keeps per circuit: until when its cached "closed" may be
    trusted, and its failure streak. Plain attributes on a slotted object, because a real
    breaker's state is shared by every call site, so it cannot live in one closure."""

    __slots__ = ("deadline", "failures")

    def __init__(self) -> None:
        self.deadline = monotonic() + CACHE_MAX_AGE
        self.failures = 0

    def refresh(self) -> None:
        # Stands in for a store read. Never reached during a measurement.
        self.deadline = monotonic() + CACHE_MAX_AGE


def floor_decorator(
    fn: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """The floor for ``@breaker`` on an ``async def``: a closure wrapper."""
    state = _FloorState()

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        if monotonic() >= state.deadline:
            state.refresh()
        try:
            result = await fn(*args, **kwargs)
        except Exception:
            state.failures += 1
            raise
        state.failures = 0
        return result

    return wrapper


def floor_sync_decorator(fn: Callable[P, T]) -> Callable[P, T]:
    """The floor for the sync shim: a plain closure around a plain ``def``."""
    state = _FloorState()

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        if monotonic() >= state.deadline:
            state.refresh()
        try:
            result = fn(*args, **kwargs)
        except Exception:
            state.failures += 1
            raise
        state.failures = 0
        return result

    return wrapper


class FloorAsyncContext(_FloorState):
    """The floor for ``async with breaker:``: an async context manager class."""

    __slots__ = ()

    async def __aenter__(self) -> FloorAsyncContext:
        if monotonic() >= self.deadline:
            self.refresh()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.failures = 0
        elif isinstance(exc, Exception):
            self.failures += 1


class FloorAsyncCall(_FloorState):
    """The floor for ``await breaker.call(fn)``: a class with an async ``call()``."""

    __slots__ = ()

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if monotonic() >= self.deadline:
            self.refresh()
        try:
            result = await fn(*args, **kwargs)
        except Exception:
            self.failures += 1
            raise
        self.failures = 0
        return result


# -- variants and their timing loops -----------------------------------------------------

_LOOP_TEMPLATES: dict[Kind, str] = {
    "async": """
async def timed(n, target, fn, clock):
    started = clock()
    for _ in range(n):
{body}
    return clock() - started
""",
    "sync": """
def timed(n, target, fn, clock):
    started = clock()
    for _ in range(n):
{body}
    return clock() - started
""",
}


def _compile_loop(name: str, kind: Kind, statement: str) -> Callable[..., Any]:
    """A timing loop around ``statement`` with a code object of its own (see the module
    docstring). ``statement`` sees the names ``target`` and ``fn``."""
    source = _LOOP_TEMPLATES[kind].format(body=textwrap.indent(statement, " " * 8))
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<timed loop: {name}>", "exec"), namespace)
    loop: Callable[..., Any] = namespace["timed"]
    return loop


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The garbage collector off for one sample, as under ``timeit``: a collection in
    the middle of a sample would be charged to whichever variant it fell on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def calls_per_sample(
    time_calls: Callable[[int], Awaitable[int]], sample_ns: float, most: int
) -> int:
    """How many calls make one sample last about ``sample_ns``: time 10, 100, ... calls
    (at most ``most``) until a timing lasts a tenth of a sample, then scale it."""
    n = 10
    while True:
        elapsed = await time_calls(n)
        if elapsed >= sample_ns / 10 or n >= most:
            break
        n *= 10
    return max(1, round(n * sample_ns / max(elapsed, 1)))


@dataclass(frozen=True, slots=True)
class Form:
    """A call form of aiocircuit and the hand-written floor it is held to."""

    key: str
    kind: Kind
    title: str
    floor_title: str


FORMS = (
    Form("decorator", "async", "@breaker on an async def", "hand-written closure wrapper"),
    Form(
        "context_manager",
        "async",
        "async with breaker:",
        "hand-written async context manager class",
    ),
    Form("call", "async", "await breaker.call(fn)", "hand-written class with async call()"),
    Form("sync_decorator", "sync", "@breaker on a plain def (sync shim)", "plain closure"),
)
# Peers are decorators, so they are set against the decorator floor of their kind.
PEER_FORM: dict[Kind, str] = {"async": "decorator", "sync": "sync_decorator"}


@dataclass(slots=True, eq=False)
class Variant:
    """One thing to time: ``statement`` run in a tight loop, ``calls`` times per sample."""

    name: str
    kind: Kind
    role: Role
    form: str | None  # the Form whose floor this variant is held to; None for bare calls
    statement: str
    target: object
    fn: Callable[[], Any]
    store: Store | None = None  # the breaker's store, for aiocircuit variants
    calls: int = 0
    samples: list[float] = field(default_factory=list)  # ns per call, one per round
    loop: Callable[..., Any] = field(init=False)

    def __post_init__(self) -> None:
        self.loop = _compile_loop(self.name, self.kind, self.statement)

    async def time(self, n: int) -> int:
        """Nanoseconds that ``n`` calls take, with the garbage collector off."""
        with gc_paused():
            if self.kind == "async":
                elapsed: int = await self.loop(n, self.target, self.fn, time.perf_counter_ns)
            else:
                elapsed = self.loop(n, self.target, self.fn, time.perf_counter_ns)
        return elapsed

    async def calibrate(self, sample_ns: float) -> None:
        """Choose ``calls`` so that one sample lasts about ``sample_ns``."""
        self.calls = await calls_per_sample(self.time, sample_ns, most=10**8)

    async def smoke(self) -> None:
        """Run the statement once, so a broken variant fails before the measurement."""
        await self.time(1)


def _async_variant(name: str, role: Role, form: str | None, target: object) -> Variant:
    return Variant(name, "async", role, form, "await target()", target, trivial)


def _sync_variant(name: str, role: Role, form: str | None, target: object) -> Variant:
    return Variant(name, "sync", role, form, "target()", target, trivial_sync)


class _CountingStore(InMemoryPersistence):
    """The in-memory store, counting reads: evidence that the measured calls stayed on the
    cached fast path. A stale cache would be re-read through ``read`` by the async forms;
    the sync shim shares their breaker, hence their cached record."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def read(self, name: str) -> CircuitRecord | None:
        self.reads += 1
        return await super().read(name)


_STORE_SUFFIX: dict[Store, str] = {"memory": "", "dynamodb": ", DynamoDB"}


async def _aiocircuit_variants(store: PersistenceStore, kind: Store) -> list[Variant]:
    """The four forms on one breaker over ``store``, warmed up."""
    config = CircuitBreakerConfig(local_cache_max_age=CACHE_MAX_AGE)
    name = "benchmark-closed-path" + ("" if kind == "memory" else f"-{kind}")
    breaker = CircuitBreaker(name, store, config=config)
    protected = breaker(trivial)
    protected_sync = breaker(trivial_sync)
    # Warm-up: the first call reads the store and caches "closed" for CACHE_MAX_AGE, so
    # every later call of every form (they share the breaker) takes the fast path. (Should
    # the cache ever go stale, the sync form on DynamoDB, an async-only store, would refuse
    # to block this event loop's thread on a read and raise RuntimeError: by design.)
    if await protected() != 1 or protected_sync() != 1:
        raise RuntimeError("aiocircuit changed the trivial call's result")
    if breaker.state is not CircuitState.CLOSED:
        raise RuntimeError(f"warm-up left {breaker!r}; the closed path cannot be measured")
    suffix = _STORE_SUFFIX[kind]

    def variant(title: str, form: str, statement: str, target: object) -> Variant:
        sync = form == "sync_decorator"
        return Variant(
            f"aiocircuit {title}{suffix}",
            "sync" if sync else "async",
            "aiocircuit",
            form,
            statement,
            target,
            trivial_sync if sync else trivial,
            store=kind,
        )

    return [
        variant("@breaker", "decorator", "await target()", protected),
        variant("async with", "context_manager", "async with target:\n    await fn()", breaker),
        variant(".call(f)", "call", "await target.call(fn)", breaker),
        variant("@breaker (sync)", "sync_decorator", "target()", protected_sync),
    ]


@dataclass(slots=True)
class _DynamoDB:
    """The DynamoDB side of a run: the moto server (counting requests), the store, and
    what the server saw while the breaker warmed up."""

    server: _moto.CountingMotoServer
    store: Any  # a DynamoDBPersistence, imported only when available
    warm_up_requests: Counter[str] = field(default_factory=Counter)


async def _dynamodb_variants(server: _moto.CountingMotoServer) -> tuple[_DynamoDB, list[Variant]]:
    """A table on ``server``, and the four forms on a breaker over it, warmed by a read."""
    from aiocircuit.persistence.dynamodb import DynamoDBPersistence

    table = f"benchmark-closed-path-{os.getpid()}"
    await DynamoDBPersistence.create_table(table, endpoint_url=server.url)
    before = server.snapshot()
    dynamodb = _DynamoDB(server, DynamoDBPersistence(table, endpoint_url=server.url))
    variants = await _aiocircuit_variants(dynamodb.store, "dynamodb")
    dynamodb.warm_up_requests = server.snapshot() - before
    return dynamodb, variants


def _baseline_variants() -> list[Variant]:
    return [
        Variant("await f() (bare)", "async", "bare", None, "await fn()", None, trivial),
        _async_variant("closure wrapper (floor)", "floor", "decorator", floor_decorator(trivial)),
        Variant(
            "async CM class (floor)",
            "async",
            "floor",
            "context_manager",
            "async with target:\n    await fn()",
            FloorAsyncContext(),
            trivial,
        ),
        Variant(
            "async call() class (floor)",
            "async",
            "floor",
            "call",
            "await target.call(fn)",
            FloorAsyncCall(),
            trivial,
        ),
        Variant("f() (bare)", "sync", "bare", None, "fn()", None, trivial_sync),
        _sync_variant(
            "plain closure (floor)", "floor", "sync_decorator", floor_sync_decorator(trivial_sync)
        ),
    ]


# -- peers, for scale --------------------------------------------------------------------
# Each is configured like aiocircuit's defaults (5 failures trip, 30 s to recovery) and
# imported by name: none of them is a dependency, and most ship no type information.


class _NotAvailable(Exception):
    """A peer that cannot be measured here, with the reason as its message."""


def _expect_trivial(result: object, who: str) -> None:
    if result != 1:
        raise RuntimeError(f"{who} returned {result!r} instead of the call's result, 1")


async def _peer_circuitbreaker() -> list[Variant]:
    circuitbreaker = importlib.import_module("circuitbreaker")
    # Distinct names: circuitbreaker registers every breaker in a process-wide monitor.
    protected = circuitbreaker.circuit(
        failure_threshold=5, recovery_timeout=30, name="benchmark-async"
    )(trivial)
    protected_sync = circuitbreaker.circuit(
        failure_threshold=5, recovery_timeout=30, name="benchmark-sync"
    )(trivial_sync)
    _expect_trivial(await protected(), "circuitbreaker")
    _expect_trivial(protected_sync(), "circuitbreaker (sync)")
    return [
        _async_variant("circuitbreaker @circuit", "peer", PEER_FORM["async"], protected),
        _sync_variant("circuitbreaker @circuit (sync)", "peer", PEER_FORM["sync"], protected_sync),
    ]


async def _peer_purgatory() -> list[Variant]:
    purgatory = importlib.import_module("purgatory")
    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
    await factory.initialize()
    # Its decorator looks the breaker up in its repository on every call, by design.
    protected = factory("benchmark")(trivial)
    _expect_trivial(await protected(), "purgatory")
    return [_async_variant("purgatory @factory(name)", "peer", PEER_FORM["async"], protected)]


async def _peer_aiobreaker() -> list[Variant]:
    aiobreaker = importlib.import_module("aiobreaker")
    breaker = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=30))
    protected = breaker(trivial)
    _expect_trivial(await protected(), "aiobreaker")
    return [_async_variant("aiobreaker @breaker", "peer", PEER_FORM["async"], protected)]


async def _peer_pybreaker() -> list[Variant]:
    pybreaker = importlib.import_module("pybreaker")
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    protected = breaker(trivial_sync)
    _expect_trivial(protected(), "pybreaker")
    return [_sync_variant("pybreaker @breaker (sync)", "peer", PEER_FORM["sync"], protected)]


async def _peer_powertools(server: _moto.CountingMotoServer | None) -> list[Variant]:
    # Powertools' circuit_breaker keeps its state in DynamoDB only: it runs on the moto
    # server, its cache as long as the run, warmed by the smoke call like ours.
    if server is None:
        raise _NotAvailable(POWERTOOLS_NA)
    import boto3
    from aws_lambda_powertools.utilities import circuit_breaker as powertools
    from aws_lambda_powertools.utilities.circuit_breaker.persistence import (
        CircuitBreakerDynamoDBPersistence,
    )

    from aiocircuit.persistence.dynamodb import DynamoDBPersistence

    table = f"benchmark-closed-path-powertools-{os.getpid()}"
    await DynamoDBPersistence.create_table(table, endpoint_url=server.url)
    client = boto3.client("dynamodb", endpoint_url=server.url)
    store = CircuitBreakerDynamoDBPersistence(table_name=table, boto3_client=client)
    config = powertools.CircuitBreakerConfig(local_cache_max_age=int(CACHE_MAX_AGE))
    protected = powertools.circuit_breaker(
        name="benchmark", persistence_store=store, config=config
    )(trivial_sync)
    _expect_trivial(protected(), "aws-lambda-powertools")
    return [
        _sync_variant("powertools @circuit_breaker (sync)", "peer", PEER_FORM["sync"], protected)
    ]


PEERS: dict[str, tuple[str, Callable[[], Awaitable[list[Variant]]]]] = {
    "circuitbreaker": ("circuitbreaker", _peer_circuitbreaker),
    "purgatory": ("purgatory", _peer_purgatory),
    "aiobreaker": ("aiobreaker", _peer_aiobreaker),
    "pybreaker": ("pybreaker", _peer_pybreaker),
    # and "powertools" (aws-lambda-powertools), which needs the moto server: _peer_variants
}


async def _peer_variants(
    unavailable: dict[str, str], server: _moto.CountingMotoServer | None
) -> list[Variant]:
    variants: list[Variant] = []
    setups = {name: setup for name, (_, setup) in PEERS.items()}
    setups["powertools"] = functools.partial(_peer_powertools, server)
    for name, setup in setups.items():
        try:
            peer = await setup()
            for variant in peer:
                await variant.smoke()
        except _NotAvailable as exc:
            unavailable[name] = str(exc)
        except Exception as exc:  # a broken peer is reported, never fatal
            unavailable[name] = f"{type(exc).__name__}: {exc}"
        else:
            variants.extend(peer)
    return variants


# -- measuring ---------------------------------------------------------------------------


@dataclass(slots=True)
class Measurement:
    """Everything one run produced."""

    mode: Mode
    seed: int
    variants: list[Variant]
    unavailable: dict[str, str]
    store_reads_in_warm_up: int
    store_reads_during_run: int
    elapsed_seconds: float
    dynamodb_not_available: str | None = None  # why the DynamoDB variants did not run
    # Requests the moto server saw: while the DynamoDB breaker warmed up, and from then on
    # to the end of the last round (which must be none).
    dynamodb_warm_up_requests: Counter[str] | None = None
    dynamodb_timed_requests: Counter[str] | None = None


async def _measure(
    mode: Mode,
    seed: int,
    *,
    peers: bool,
    server: _moto.CountingMotoServer | None,
    dynamodb_not_available: str | None,
) -> Measurement:
    started = time.perf_counter()
    store = _CountingStore()
    variants = _baseline_variants() + await _aiocircuit_variants(store, "memory")
    dynamodb: _DynamoDB | None = None
    if server is not None:
        try:
            dynamodb, dynamodb_variants = await _dynamodb_variants(server)
        except Exception as exc:  # reported; the in-memory measurement still stands
            dynamodb_not_available = f"{type(exc).__name__}: {exc}"
        else:
            variants += dynamodb_variants
    unavailable: dict[str, str] = {}
    if peers:
        variants += await _peer_variants(unavailable, server)
    try:
        # Everything from here to the end of the last round is the timed part.
        server_before = None if dynamodb is None else dynamodb.server.snapshot()
        measurement = await _measure_variants(mode, seed, variants, store, unavailable)
        if dynamodb is not None and server_before is not None:
            measurement.dynamodb_warm_up_requests = dynamodb.warm_up_requests
            measurement.dynamodb_timed_requests = dynamodb.server.snapshot() - server_before
    finally:
        if dynamodb is not None:
            await dynamodb.store.aclose()
    measurement.dynamodb_not_available = dynamodb_not_available
    measurement.elapsed_seconds = time.perf_counter() - started
    return measurement


async def _measure_variants(
    mode: Mode,
    seed: int,
    variants: list[Variant],
    store: _CountingStore,
    unavailable: dict[str, str],
) -> Measurement:
    for variant in variants:
        await variant.smoke()
    reads_before = store.reads

    sample_ns = mode.sample_seconds * 1e9
    for variant in variants:
        await variant.time(1000)  # let CPython specialise the loop and the wrapper
        await variant.calibrate(sample_ns)

    rng = random.Random(seed)
    gc.collect()
    with _report.Progress("closed-path rounds", mode.rounds) as progress:
        for round_number in range(mode.rounds):
            order = list(variants)
            rng.shuffle(order)
            for variant in order:
                variant.samples.append(await variant.time(variant.calls) / variant.calls)
            if round_number % 50 == 49:
                gc.collect()  # garbage made while the collector was off, outside any sample
                progress.advance(50)

    return Measurement(
        mode=mode,
        seed=seed,
        variants=variants,
        unavailable=unavailable,
        store_reads_in_warm_up=reads_before,
        store_reads_during_run=store.reads - reads_before,
        elapsed_seconds=math.nan,  # set by the caller, which counts the set-up too
    )


# -- analysis and report -----------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One variant's result. Every figure is a median over rounds; the overhead and ratio
    are computed within each round first (see ``_analyse``)."""

    variant: Variant
    median_ns: float
    overhead_ns: float | None  # None for a bare call
    ratio: float | None  # overhead over its floor's overhead: the verdict; None for bare
    round_ratios: list[float]  # the ratio within each round, whose median ``ratio`` is
    ratio_of_medians: float | None  # the same ratio from whole-run medians, for comparison
    target_met: bool | None  # None unless the variant is an aiocircuit form
    # DynamoDB variants only: overhead over the in-memory breaker's, same form, per round.
    memory_ratio: float | None = None
    memory_round_ratios: list[float] = field(default_factory=list)
    memory_target_met: bool | None = None


def _median_or_nan(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _analyse(measurement: Measurement) -> list[Row]:
    """Overheads and ratios, paired within rounds.

    A variant, its bare call and its floor run within some tens of milliseconds of each
    other in a round, so they mostly share the machine's state of the moment; their
    overhead and ratio are taken in each round, and the median over rounds is reported.
    Dividing whole-run medians instead is less stable here: in five quick runs on this
    machine, ``await breaker.call(fn)`` came out at 1.08-1.14x four times and 1.39x once
    that way, but 1.09-1.12x every time paired.
    """
    variants = measurement.variants
    bare = {v.kind: v for v in variants if v.role == "bare"}
    floors = {v.form: v for v in variants if v.role == "floor"}
    in_memory = {v.form: v for v in variants if v.store == "memory"}
    rows = []
    for v in variants:
        median_ns = statistics.median(v.samples)
        if v.role == "bare":
            rows.append(Row(v, median_ns, None, None, [], None, None))
            continue
        b, fl = bare[v.kind], floors[v.form]
        rounds = list(zip(v.samples, b.samples, fl.samples, strict=True))
        overhead = statistics.median(s - sb for s, sb, _ in rounds)
        round_ratios = [(s - sb) / (sf - sb) for s, sb, sf in rounds if sf > sb]
        ratio = _median_or_nan(round_ratios)
        floor_overhead = statistics.median(fl.samples) - statistics.median(b.samples)
        ratio_of_medians = (
            (median_ns - statistics.median(b.samples)) / floor_overhead
            if floor_overhead > 0
            else math.nan
        )
        met = ratio <= TARGET_RATIO if v.role == "aiocircuit" else None
        row = Row(v, median_ns, overhead, ratio, round_ratios, ratio_of_medians, met)
        if v.store == "dynamodb":
            m = in_memory[v.form]
            paired = zip(v.samples, b.samples, m.samples, strict=True)
            row.memory_round_ratios = [(s - sb) / (sm - sb) for s, sb, sm in paired if sm > sb]
            row.memory_ratio = _median_or_nan(row.memory_round_ratios)
            row.memory_target_met = row.memory_ratio <= SAME_COST_RATIO
        rows.append(row)
    return rows


def _quartiles(values: list[float]) -> tuple[float, float] | None:
    if len(values) < 2:
        return None
    q1, _, q3 = statistics.quantiles(values, n=4)
    return q1, q3


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "n/a"
    return f"{value:{spec}}{suffix}"


_HEADERS = ("variant", "ns/call", "overhead ns", "ratio", "round IQR", f"<= {TARGET_RATIO}x")
_WIDTHS = (36, 9, 12, 7, 12, 8)
_TITLES: dict[Kind, str] = {
    "async": "async forms, awaited in one anyio.run (asyncio backend)",
    "sync": "sync forms",
}


def _line(cells: tuple[str, ...]) -> str:
    name, *numbers = cells
    padded = (c.rjust(w) for c, w in zip(numbers, _WIDTHS[1:], strict=True))
    return "  ".join((name.ljust(_WIDTHS[0]), *padded)).rstrip()


def _table(rows: list[Row]) -> str:
    lines = []
    for kind in ("async", "sync"):
        lines += ["", _TITLES[kind], _line(_HEADERS), "-" * len(_line(_HEADERS))]
        # Bare call first, then each form: its floor, aiocircuit, then any peers.
        for form_key in (None, *(f.key for f in FORMS if f.kind == kind)):
            for row in rows:
                v = row.variant
                if v.kind != kind or v.form != form_key:
                    continue
                iqr = _quartiles(row.round_ratios) if v.role != "floor" else None
                cells = (
                    v.name,
                    _fmt(row.median_ns, ".1f"),
                    _fmt(row.overhead_ns, ".1f"),
                    _fmt(row.ratio, ".2f", "x"),
                    "-" if iqr is None else f"{iqr[0]:.2f}-{iqr[1]:.2f}",
                    {True: "yes", False: "NO", None: ""}[row.target_met],
                )
                lines.append(_line(cells))
    return "\n".join(lines)


def _aiocircuit_row(rows: list[Row], form: Form, store: Store) -> Row | None:
    return next((r for r in rows if r.variant.store == store and r.variant.form == form.key), None)


_DYNAMODB_HEADERS = (
    "form",
    "in-memory",
    "DynamoDB",
    "ratio",
    "round IQR",
    f"<= {SAME_COST_RATIO:.2f}x",
)


def _dynamodb_table(measurement: Measurement, rows: list[Row]) -> str:
    """The DynamoDB variants against the in-memory ones, and what the server saw."""
    title = "DynamoDB store against the in-memory store: overhead ns, same form, same run"
    if measurement.dynamodb_not_available is not None:
        return f"{title}\nn/a: {measurement.dynamodb_not_available}"
    header = _line(_DYNAMODB_HEADERS)
    lines = [title, header, "-" * len(header)]
    for form in FORMS:
        memory, dynamodb = (
            _aiocircuit_row(rows, form, "memory"),
            _aiocircuit_row(rows, form, "dynamodb"),
        )
        if memory is None or dynamodb is None:
            continue
        iqr = _quartiles(dynamodb.memory_round_ratios)
        cells = (
            form.title,
            _fmt(memory.overhead_ns, ".1f"),
            _fmt(dynamodb.overhead_ns, ".1f"),
            _fmt(dynamodb.memory_ratio, ".2f", "x"),
            "-" if iqr is None else f"{iqr[0]:.2f}-{iqr[1]:.2f}",
            {True: "yes", False: "NO", None: ""}[dynamodb.memory_target_met],
        )
        lines.append(_line(cells))
    warm_up, timed = measurement.dynamodb_warm_up_requests, measurement.dynamodb_timed_requests
    if warm_up is not None and timed is not None:
        lines += [
            "",
            f"requests at the moto server: warm-up {_moto.describe(warm_up)}; from then to the "
            f"end of the last round (the timed part): {_moto.describe(timed)}",
        ]
    return "\n".join(lines)


def _verdicts(measurement: Measurement, rows: list[Row]) -> list[str]:
    lines = []
    for form in FORMS:
        row = _aiocircuit_row(rows, form, "memory")
        assert row is not None
        verdict = "target met:   " if row.target_met else "TARGET MISSED:"
        lines.append(
            f"{verdict} {'`' + form.title + '`':<38} costs {_fmt(row.ratio, '.2f', 'x')} the "
            f"overhead of a {form.floor_title} (target <= {TARGET_RATIO}x)"
        )
    if measurement.dynamodb_not_available is not None:
        lines.append(f"NOT MEASURED:  the DynamoDB store: {measurement.dynamodb_not_available}")
        return lines
    for form in FORMS:
        row = _aiocircuit_row(rows, form, "dynamodb")
        if row is None:
            continue
        met = bool(row.target_met and row.memory_target_met)
        verdict = "target met:   " if met else "TARGET MISSED:"
        lines.append(
            f"{verdict} {'`' + form.title + '`':<38} on DynamoDB costs "
            f"{_fmt(row.memory_ratio, '.2f', 'x')} the in-memory breaker's overhead (target "
            f"~1.0x, <= {SAME_COST_RATIO:.2f}x) and {_fmt(row.ratio, '.2f', 'x')} its floor's "
            f"(target <= {TARGET_RATIO}x)"
        )
    timed = measurement.dynamodb_timed_requests
    if timed is not None:
        if timed.total():
            lines.append(
                f"TARGET MISSED: the moto server got {timed.total()} request(s) during the "
                f"timed part ({_moto.describe(timed)}): the DynamoDB cache went stale"
            )
        else:
            lines.append("target met:    no DynamoDB request reached the server in the timed part")
    return lines


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 3)


def _dynamodb_json(measurement: Measurement, rows: list[Row]) -> dict[str, Any]:
    warm_up, timed = measurement.dynamodb_warm_up_requests, measurement.dynamodb_timed_requests
    return {
        "not_available": measurement.dynamodb_not_available,
        "target_ratio_to_in_memory": SAME_COST_RATIO,
        "server_requests_in_warm_up": None if warm_up is None else dict(warm_up),
        "server_requests_during_timed_part": None if timed is None else dict(timed),
        "forms": [
            {
                "form": form.key,
                "title": form.title,
                "ratio_to_in_memory": _number(row.memory_ratio),
                "ratio_in_memory_round_quartiles": _quartiles(row.memory_round_ratios),
                "ratio_to_floor": _number(row.ratio),
                "target_met": bool(row.target_met and row.memory_target_met),
            }
            for form in FORMS
            if (row := _aiocircuit_row(rows, form, "dynamodb")) is not None
        ],
    }


def _report_json(measurement: Measurement, rows: list[Row]) -> dict[str, Any]:
    return {
        "benchmark": "closed_path",
        "verdict_basis": (
            "median over rounds of the overhead ratio to a hand-written floor, "
            "each ratio taken within one round of the same run"
        ),
        "target_ratio": TARGET_RATIO,
        "mode": measurement.mode.name,
        "rounds": measurement.mode.rounds,
        "sample_seconds": measurement.mode.sample_seconds,
        "seed": measurement.seed,
        "elapsed_seconds": round(measurement.elapsed_seconds, 1),
        "store_reads_in_warm_up": measurement.store_reads_in_warm_up,
        "store_reads_during_run": measurement.store_reads_during_run,
        "forms": [
            {
                "form": form.key,
                "title": form.title,
                "floor": form.floor_title,
                "ratio": _number(row.ratio),
                "target_met": row.target_met,
            }
            for form in FORMS
            for row in rows
            if row.variant.store == "memory" and row.variant.form == form.key
        ],
        "dynamodb": _dynamodb_json(measurement, rows),
        "variants": [
            {
                "name": row.variant.name,
                "kind": row.variant.kind,
                "role": row.variant.role,
                "form": row.variant.form,
                "store": row.variant.store,
                "calls_per_sample": row.variant.calls,
                "median_ns_per_call": _number(row.median_ns),
                "overhead_ns": _number(row.overhead_ns),
                "ratio_to_floor": _number(row.ratio),
                "ratio_of_medians": _number(row.ratio_of_medians),
                "round_ratio_quartiles": _quartiles(row.round_ratios),
                "target_met": row.target_met,
                "ratio_to_in_memory": _number(row.memory_ratio),
                "samples_ns_per_call": [round(s, 2) for s in row.variant.samples],
            }
            for row in rows
        ],
        "peers_not_available": measurement.unavailable,
    }


def _headlines(measurement: Measurement, rows: list[Row]) -> list[_report.Headline]:
    headlines = []
    for form in FORMS:
        row = _aiocircuit_row(rows, form, "memory")
        if row is not None:
            headlines.append(
                _report.Headline(
                    f"`{form.title}`: overhead / floor's",
                    _fmt(row.ratio, ".2f", "x"),
                    f"<= {TARGET_RATIO}x",
                    row.target_met,
                )
            )
    dynamodb = [r for r in rows if r.variant.store == "dynamodb" and r.memory_ratio is not None]
    if dynamodb:
        worst = max(dynamodb, key=lambda r: r.memory_ratio or 0.0)
        headlines.append(
            _report.Headline(
                "on DynamoDB / in memory, worst form",
                _fmt(worst.memory_ratio, ".2f", "x"),
                f"<= {SAME_COST_RATIO:.2f}x",
                worst.memory_target_met,
            )
        )
    for row in rows:
        if row.variant.role == "peer":
            headlines.append(
                _report.Headline(
                    f"{row.variant.name}: overhead / floor's", _fmt(row.ratio, ".1f", "x")
                )
            )
    for name, reason in measurement.unavailable.items():
        headlines.append(_report.Headline(name, f"n/a: {reason}"))
    return headlines


def _breaker_of(variant: Variant) -> str:
    if variant.role == "aiocircuit":
        return "aiocircuit"
    name = variant.name.split()[0]
    return "aws-lambda-powertools" if name == "powertools" else name


def _chart(measurement: Measurement, rows: list[Row]) -> str:
    """Overhead over the floor's, per variant, on a log axis; returns what it did."""
    reason = _report.charts_unavailable()
    if reason is not None:
        return f"chart: n/a: {reason}"
    plt = _report.pyplot()
    shown = [
        r
        for r in rows
        if r.variant.role in ("aiocircuit", "peer") and r.ratio is not None and r.ratio > 0
    ]
    shown.sort(key=lambda r: (r.variant.role != "aiocircuit", r.ratio or 0.0))
    labels = [r.variant.name for r in shown]
    figure, axes = plt.subplots(figsize=(8, 0.32 * len(shown) + 1.6))
    y = range(len(shown))
    axes.barh(
        list(y),
        [r.ratio for r in shown],
        color=[_report.colour(_breaker_of(r.variant)) for r in shown],
    )
    for position, row in zip(y, shown, strict=True):
        axes.text(row.ratio or 0.0, position, f" {row.ratio:.2f}x", va="center", fontsize=8)
    axes.set_yticks(list(y), labels)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.axvline(TARGET_RATIO, color="black", linestyle="--", linewidth=0.8)
    axes.set_xlim(0.5, max(r.ratio or 1.0 for r in shown) * 2)
    axes.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:g}x"))
    axes.set_xlabel(
        f"overhead per call / a hand-written floor's (log; dashed: target {TARGET_RATIO}x)"
    )
    missing = "; ".join(f"{k}: n/a ({v})" for k, v in measurement.unavailable.items())
    axes.set_title(
        "Closed path: what a healthy circuit costs per call" + (f"\n{missing}" if missing else "")
    )
    return f"chart written to {_report.save_chart(figure, SCENARIO)}"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks closed-path",
        description="Closed-path overhead of aiocircuit per call, as ratios to "
        "hand-written floors measured in the same run.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.rounds} short rounds (under 30 s) instead of {DEFAULT.rounds}",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip the peer libraries")
    parser.add_argument(
        "--no-dynamodb",
        action="store_true",
        help="skip the variants on the DynamoDB store (and the moto server they need)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the round order")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_PATH, help="where to write the JSON results"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and verdicts, write the JSON. Always 0."""
    args = _parse_args(argv)
    mode = QUICK if args.quick else DEFAULT
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    if os.environ.get("AIOCIRCUIT_DISABLED"):
        print("warning: AIOCIRCUIT_DISABLED is set; aiocircuit is measured as a pass-through")
    print(
        f"aiocircuit closed-path overhead: {mode.name} mode, {mode.rounds} rounds, "
        f"~{mode.sample_seconds * 1000:.0f} ms per sample, seed {seed}",
        flush=True,
    )

    server: _moto.CountingMotoServer | None = None
    not_available: str | None = None
    missing = _moto.missing_requirements()
    if args.no_dynamodb:
        not_available = "skipped (--no-dynamodb)"
    elif missing:
        not_available = f"needs {', '.join(missing)} ({_moto.INSTALL_HINT})"
    else:
        server = _moto.CountingMotoServer()
    try:
        measurement = anyio.run(
            functools.partial(
                _measure,
                mode,
                seed,
                peers=not args.no_peers,
                server=server,
                dynamodb_not_available=not_available,
            ),
            backend="asyncio",
        )
    finally:
        if server is not None:
            server.stop()
    rows = _analyse(measurement)

    print(_table(rows))
    print()
    print(_dynamodb_table(measurement, rows))
    print()
    print(
        "ns/call: median over rounds. overhead: ns/call minus the bare call's, and ratio: that\n"
        "over the floor's overhead (peers: the decorator floor of their kind), both taken\n"
        "within each round, median over rounds; round IQR: quartiles of the per-round ratio.\n"
        "The verdict is the ratio; absolute ns are for scale only."
    )
    if not args.no_peers:
        for name, reason in measurement.unavailable.items():
            print(f"{name}: n/a: {reason}")
    if measurement.store_reads_in_warm_up != 1:
        print(
            f"note: the warm-up read the store {measurement.store_reads_in_warm_up} times "
            "(expected once: the first call fills the cache)"
        )
    if measurement.store_reads_during_run:
        print(
            f"warning: the store was read {measurement.store_reads_during_run} times while "
            "measuring: the cache went stale and some calls left the fast path"
        )
    print()
    for line in _verdicts(measurement, rows):
        print(line)

    _report.write_json(
        SCENARIO, _report_json(measurement, rows), _headlines(measurement, rows), args.output
    )
    print(f"\nresults written to {args.output} ({measurement.elapsed_seconds:.0f} s)")
    chart = _chart(measurement, rows)
    print(chart)
    return 0
