"""Half-open stampede: how many calls reach a recovering downstream when a fleet calls at once.

When a circuit's ``recovery_timeout`` runs out, every process of a fleet may try the
downstream at the same instant. A breaker's job then is to let exactly one probe through
and hold everyone else back until it answers, fleet-wide; the herd it fails to hold back
lands on a downstream that has just come back, or is still down. Target: exactly one call
per probe round reaches the downstream for aiocircuit; every peer's count is reported.

What runs (default mode; the quick mode is smaller, see below):

* 50 *environments* per breaker, each a breaker instance with its own store client and
  its own local state (a :class:`~benchmarks._contenders.Contender` built for it alone),
  all on one shared store: moto's DynamoDB server for aiocircuit and Powertools, one
  ``redis-server`` for purgatory, aiobreaker and pybreaker. circuitbreaker has no shared
  store, so its environments decide alone, as a fleet running it would; it still runs.
* 20 tasks per environment: 1,000 callers per round. The sync peers (Powertools,
  pybreaker) make their 20 calls from 20 threads, through the Contender.
* The environments live in 10 spawned OS processes (5 each, each process its own event
  loop), which fire together at a wall-clock instant the parent hands out 0.8 s ahead
  (they fire within a few tens of ms of each other: "host_fire_skew_ms" in the JSON; a
  skew over 100 ms, a busy machine's doing, is printed). The workers run
  at ``nice`` 5, so that the stores' servers (moto, in the parent; redis-server), which
  stand in for services on machines of their own, are served first.
* Each call is ``GET /c/<breaker>-c<cycle>-r<round>?delay_ms=200`` on the downstream
  server (``benchmarks/_downstream.py``, its own process), which counts it as it arrives
  and answers it 200 ms later. The harness also records, per call, whether and when the
  breaker invoked it, and when it was answered; the server's count and the harness's must
  agree, and the harness's times split the calls that got through (below).

Holding the probe. A round's count means something only if the first call through is
still unanswered while every other caller is decided; otherwise a second call might get
through because the circuit had closed, which is no stampede. 200 ms is not enough for
that on this 2-core machine (10 processes making 1,000 calls take up to ~3 s to decide
them all), so a call that got through is held after its answer until the round has
settled: every caller in every host decided (a count shared through a
``multiprocessing`` array), or nobody decided for 0.5 s (those left wait on the probe
itself: pybreaker's 19 other callers per environment wait for its lock), or at the latest
``recovery_timeout - 1.5`` s after firing. That cap keeps every hold shorter than the
shortest probe lease any breaker grants (Powertools' lease ends on a whole second, so it
may last just over ``recovery_timeout - 1`` s), so no breaker may rightly hand the probe
to someone else while it is held. The calls that got through are then split: "in flight",
reached before the first of them was answered (the stampede, and the figure of the
verdict), and "after", reached later (after a closed circuit, or a new probe once a lease
or recovery_timeout ran out; these show where a breaker's callers took longer to decide
than the cap, see Powertools below).

A cycle, for every breaker:

1. The downstream fails (503). One environment trips the circuit with real failing calls
   (``failure_threshold`` of them); then every environment calls until it sees a
   rejection, so that each one's local view knows the circuit is open (circuitbreaker's
   environments each trip their own circuit here). These setup calls go to another name
   at the server and count in no round.
2. Round "probe fails": once ``recovery_timeout`` plus 0.5 s (whole-second timestamps)
   has passed since the circuit was last seen opening, every caller fires at one instant.
   The downstream still fails: the probe fails and reopens the circuit. At once, every
   environment calls again until rejected, so it sees the reopened circuit.
3. The downstream recovers. Round "probe succeeds": every caller fires once the reopened
   circuit is due; the probe succeeds and (``success_threshold`` 1) closes the circuit.

The breakers' volleys run one at a time, aiocircuit first in each round, so that no
breaker's herd loads the machine while another's stampede is measured. The default mode
runs two cycles (4 rounds), waiting ``local_cache_max_age`` + 1 s between them so that
every environment has seen the closed circuit before the next trip.

Settings, one for every breaker: ``Settings()``'s defaults (``failure_threshold`` 5,
``success_threshold`` 1, ``local_cache_max_age`` 5 s where a breaker has a cache:
aiocircuit, Powertools) with ``recovery_timeout`` 4 s (quick: 2 s), long enough for the
hold above. The cache is older than ``recovery_timeout``: that is the case the scenario
must check. Round 1 of each cycle fires within about 2.5 s of the environments' priming
reads, so each holds a fresh cached "open" whose recovery deadline passes while it is
fresh; aiocircuit's cached record carries ``opened_at`` and its state machine compares
``now`` with ``opened_at + recovery_timeout`` on every call, so the probe election
happens on time, without a read: round 1 shows 0 ``GetItem`` and one conditional
``UpdateItem`` per environment at moto. Later rounds often find the caches expired (the
peers' volleys in between take a while) and show one ``GetItem`` per environment (its 20
tasks share one read), the other path.

Store requests are counted at the servers during each volley (moto per operation, Redis'
``INFO commandstats``), and the ``aiocircuit`` logger's warnings too: a store failure
makes a call fail open, which would let it through; none is expected.

Each environment's clients are opened before the first round: aiocircuit's store client
by one read of another key (an aioboto3 client's first call costs 100-200 ms of botocore
and SSL set-up, which a long-running process has long paid), the HTTP clients by a
request to ``/ok``; the priming calls open the rest.

Quick mode: 20 environments x 5 tasks (100 callers), all in this process as distinct
Contenders, one cycle, about 15-20 s. An environment is a breaker with its own store
client and local state; whether it lives in a process of its own does not change what a
round counts. 50 aiocircuit store clients alone take 5-10 s to open in one process, and
the peers that let every caller through cost far more per round than those that hold them
back.

What the peers' numbers mean:

* Powertools: each of its callers that holds a cached "open" makes its own conditional
  ``PutItem`` (about 1,000 per round), and the single-threaded moto server needs 5-40 s
  for them, so most of its callers are decided after its probe answered. Those are
  "after": in a failing round, new probes once the reopened circuit is due again; in a
  succeeding round, calls on the closed circuit. Against real DynamoDB they would be
  decided within tens of ms, while the probe is in flight, and rejected.
* Also Powertools: it keeps the failure streak, the probe-success streak and the probe
  owner id (per thread) at module level, so environments hosted in one process share
  them. With ``success_threshold`` 1 and one winning thread per election this does not
  change who probes.
* pybreaker holds a lock for the whole call, so within one environment one call runs at a
  time; across environments its Redis state has no gate: one probe per environment.

The exit status is 0 whatever was counted: a missed target is printed and written to the
headline with ``met`` false.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import math
import multiprocessing
import os
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import anyio
import anyio.to_thread

from . import _moto, _report
from ._contenders import (
    BREAKERS,
    Call,
    Contender,
    Outcome,
    Settings,
    SharedStores,
    Unavailable,
    build,
    downstream_call,
)

SCENARIO = "stampede"
ENVIRONMENTS = 50
TASKS = 20
PROBE_DELAY_MS = 200
MARGIN = 0.5  # seconds past the recovery deadline before a volley fires
HOLD_POLL = 0.005  # how often a host checks whether its round has settled
QUIET = 0.5  # a round has settled when no caller has been decided for this long
FIRE_SKEW_NOTE = 0.1  # seconds between the hosts' firing instants worth a note
THROUGH_DETAIL = 60  # list each call that got through in the JSON when at most this many
VOLLEY_TIMEOUT = 180.0  # Powertools' volleys take 10-30 s here (see the docstring)
HOST_TIMEOUT = VOLLEY_TIMEOUT + 60  # the longest any one command to a host may take
TARGET = 1


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    environments: int
    tasks: int  # per environment
    processes: int  # 0: every environment in this process
    cycles: int  # trip, a failing probe round, a succeeding probe round
    recovery_timeout: int  # seconds; the rest of the settings are Settings()'s defaults

    @property
    def settings(self) -> Settings:
        """The one configuration every breaker gets (see the module docstring)."""
        return Settings(recovery_timeout=self.recovery_timeout)

    @property
    def hold_cap(self) -> float:
        """The longest a call that got through is held, from firing: 0.5 s less than
        the shortest probe lease any breaker grants (Powertools' lease ends at a whole
        second, so it may last just over ``recovery_timeout - 1``), so that no breaker
        may rightly hand the probe to another caller while it is held."""
        return self.recovery_timeout - 1.5


QUICK = Mode("quick", environments=20, tasks=5, processes=0, cycles=1, recovery_timeout=2)
DEFAULT = Mode(
    "default",
    environments=ENVIRONMENTS,
    tasks=TASKS,
    processes=10,
    cycles=2,
    recovery_timeout=4,
)


@dataclass(frozen=True, slots=True)
class Round:
    cycle: int
    number: int  # 1-based across the run
    fails: bool  # the downstream still fails: the probe fails and reopens the circuit

    @property
    def label(self) -> str:
        return f"round {self.number} ({'probe fails' if self.fails else 'probe succeeds'})"

    def server_name(self, breaker: str) -> str:
        """The name the downstream counts this round's calls of ``breaker`` under."""
        return f"{breaker}-c{self.cycle}-r{self.number}"


def circuit_name(breaker: str) -> str:
    return f"stampede-{breaker}"


# -- a host of environments: this process, or one spawned worker ---------------------------


class _WarningCounter(logging.Handler):
    """Counts the warnings of the ``aiocircuit`` logger: store failures, which make a
    call fail open."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(record.getMessage())


class CallRecord(NamedTuple):
    """One caller of a volley; times are wall-clock seconds."""

    outcome: str  # an Outcome's value
    environment: int
    reached: float | None  # when the breaker invoked the call (None: rejected)
    answered: float | None  # when the call returned to the breaker (after its hold)
    decided: float  # reached, or when the rejection came back
    ended: float  # when the breaker returned


class Host:
    """Some of the environments of every breaker, in one process and one event loop.

    Environment ``i`` of breaker ``b`` is ``contenders[b][k]`` where
    ``environments[k] == i``: a Contender of its own (breaker instance, store client,
    local state) and, per environment, its own httpx clients. Commands (``cmd_*``) take
    and return plain picklable values, so that a worker process can run them too.

    ``decided[slot]`` counts this host's callers that have been decided (let through or
    rejected), across every volley; the array is shared by all hosts, so that a call
    that got through can be held until every caller of the round has been decided.
    """

    def __init__(self, decided: Any, slot: int) -> None:
        self.decided = decided
        self.slot = slot
        self._decided_lock = threading.Lock()  # threads (sync peers) count here too
        self.environments: list[int] = []
        self.tasks = TASKS
        self.url = ""
        self.delay_ms = PROBE_DELAY_MS
        self.contenders: dict[str, list[Contender]] = {}
        self.async_clients: list[Any] = []
        self.sync_clients: list[Any] = []
        self.warnings = _WarningCounter()
        logging.getLogger("aiocircuit").addHandler(self.warnings)

    async def handle(self, command: str, args: Sequence[Any]) -> Any:
        return await getattr(self, f"cmd_{command}")(*args)

    async def cmd_setup(
        self,
        breakers: list[str],
        environments: list[int],
        tasks: int,
        settings: dict[str, Any],
        shared: dict[str, Any],
        url: str,
        delay_ms: int,
    ) -> dict[str, str | None]:
        """Build every environment; returns, per breaker, why it cannot run (or None)."""
        import httpx

        self.environments = list(environments)
        self.tasks = tasks
        self.url = url
        self.delay_ms = delay_ms
        limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
        self.async_clients = [httpx.AsyncClient(limits=limits) for _ in environments]
        self.sync_clients = [httpx.Client(limits=limits) for _ in environments]
        reasons: dict[str, str | None] = {}
        for breaker in breakers:
            built: list[Contender] = []
            try:
                for _ in environments:
                    built.append(
                        await build(
                            breaker,
                            circuit_name(breaker),
                            Settings(**settings),
                            SharedStores(**shared),
                        )
                    )
            except Unavailable as exc:
                reasons[breaker] = str(exc)
                for contender in built:
                    await contender.aclose()
                continue
            self.contenders[breaker] = built
            reasons[breaker] = None
        return reasons

    async def cmd_warm(self) -> None:
        """Open every client before the first round (see the module docstring)."""

        async def warm_http(async_client: Any, sync_client: Any) -> None:
            await async_client.get(f"{self.url}/ok")
            await anyio.to_thread.run_sync(sync_client.get, f"{self.url}/ok")

        async with anyio.create_task_group() as tg:
            for async_client, sync_client in zip(
                self.async_clients, self.sync_clients, strict=True
            ):
                tg.start_soon(warm_http, async_client, sync_client)
        for contender in self.contenders.get("aiocircuit", []):
            await contender.warm()

    async def cmd_drop(self, breaker: str) -> None:
        """Stop running ``breaker`` (it broke); release its clients."""
        for contender in self.contenders.pop(breaker, []):
            with contextlib.suppress(Exception):  # it broke already: best effort
                await contender.aclose()

    def _call(self, index: int, path: str) -> Call:
        return downstream_call(
            f"{self.url}{path}", self.async_clients[index], self.sync_clients[index]
        )

    async def cmd_prime(
        self, breakers: list[str], only: list[int] | None, limit: int, name: str
    ) -> dict[str, dict[str, Any]]:
        """Each environment (of ``only``, if given) of each breaker calls
        ``/c/<breaker>-<name>`` until a call is rejected, at most ``limit``
        times. Returns per breaker: calls that reached the downstream, environments that
        never saw a rejection, and when the last call that got through ended."""
        results: dict[str, dict[str, Any]] = {}

        async def prime(breaker: str, index: int) -> None:
            contender = self.contenders[breaker][index]
            call = self._call(index, f"/c/{breaker}-{name}")
            result = results[breaker]
            try:
                for _ in range(limit):
                    outcome = await contender.attempt(call)
                    if outcome is Outcome.REJECTED:
                        return
                    result["reached"] += 1
                    result["last_reach_end"] = max(result["last_reach_end"], time.time())
            except Exception as exc:  # this breaker broke: reported, never fatal
                result["error"] = f"{type(exc).__name__}: {exc}"
                return
            result["unprimed"].append(self.environments[index])

        async with anyio.create_task_group() as tg:
            for breaker in breakers:
                results[breaker] = {
                    "reached": 0,
                    "unprimed": [],
                    "last_reach_end": 0.0,
                    "error": None,
                }
                for index, environment in enumerate(self.environments):
                    if only is None or environment in only:
                        tg.start_soon(prime, breaker, index)
        return results

    def _count_decided(self) -> None:
        with self._decided_lock:
            self.decided[self.slot] += 1

    async def cmd_volley(
        self, breaker: str, name: str, fire_at: float, target: int, cap: float
    ) -> dict[str, Any]:
        """At wall-clock ``fire_at``, every task of every environment of ``breaker``
        makes one call. Returns a :class:`CallRecord` per call and the instant this host
        fired.

        A call that gets through is answered by the downstream after ``delay_ms``, then
        held until the round has settled: every caller of the round, in every host, has
        been decided (the hosts' ``decided`` counts reach ``target``), or no caller
        anywhere has been decided for ``QUIET`` seconds (those left wait on the probe
        itself, as pybreaker's callers wait for its lock), or ``cap`` seconds have passed
        since firing (less than ``recovery_timeout``, the probe lease's length).
        """
        path = f"/c/{name}?delay_ms={self.delay_ms}"
        start = anyio.Event()
        settled = anyio.Event()
        settled_for_threads = threading.Event()
        records: list[CallRecord] = []
        warnings_before = self.warnings.count

        async def watch() -> None:
            # Polled: the counts are moved by other processes, which cannot wake us.
            last_total, last_change = sum(self.decided), time.time()
            while True:
                total, now = sum(self.decided), time.time()
                if total != last_total:
                    last_total, last_change = total, now
                if total >= target or now - last_change >= QUIET or now >= fire_at + cap:
                    break
                await anyio.sleep(HOLD_POLL)
            settled.set()
            settled_for_threads.set()

        async def caller(index: int) -> None:
            inner = self._call(index, path)
            reached: list[float] = []
            answered: list[float] = []

            async def run() -> object:
                reached.append(time.time())
                self._count_decided()
                try:
                    return await inner.run()
                finally:
                    await settled.wait()
                    answered.append(time.time())

            def run_sync() -> object:
                reached.append(time.time())
                self._count_decided()
                try:
                    return inner.run_sync()
                finally:
                    settled_for_threads.wait(cap + 1)
                    answered.append(time.time())

            contender = self.contenders[breaker][index]
            await start.wait()
            outcome = await contender.attempt(Call(run, run_sync))
            ended = time.time()
            if not reached:
                self._count_decided()
            records.append(
                CallRecord(
                    outcome.value,
                    self.environments[index],
                    reached[0] if reached else None,
                    answered[0] if answered else None,
                    reached[0] if reached else ended,
                    ended,
                )
            )

        fired = 0.0
        with anyio.fail_after(VOLLEY_TIMEOUT):
            async with anyio.create_task_group() as tg:
                for index in range(len(self.environments)):
                    for _ in range(self.tasks):
                        tg.start_soon(caller, index)
                await anyio.sleep(max(0.0, fire_at - time.time()))
                fired = time.time()
                start.set()
                tg.start_soon(watch)
        return {
            "fired": fired,
            "records": records,
            "warnings": self.warnings.count - warnings_before,
            "warning_examples": self.warnings.first[:3],
        }

    async def aclose(self) -> None:
        for breaker in list(self.contenders):
            await self.cmd_drop(breaker)
        for async_client in self.async_clients:
            await async_client.aclose()
        for sync_client in self.sync_clients:
            sync_client.close()
        logging.getLogger("aiocircuit").removeHandler(self.warnings)


class HostError(Exception):
    """A command failed in a host; the message carries its traceback."""


class LocalHost:
    """A :class:`Host` in this process (the quick mode)."""

    def __init__(self, decided: Any) -> None:
        self.host = Host(decided, 0)
        self.label = "this process"

    async def request(self, command: str, *args: Any) -> Any:
        try:
            return await self.host.handle(command, args)
        except Exception as exc:
            raise HostError(f"{self.label}: {command} failed:\n{traceback.format_exc()}") from exc

    async def aclose(self) -> None:
        await self.host.aclose()


def _worker(connection: Any, decided: Any, slot: int) -> None:
    """Entry point of a spawned host process: run commands until told to stop."""
    _moto.use_fake_aws_credentials()
    # The callers yield to the stores' servers (moto runs in the parent): those stand in
    # for DynamoDB and Redis, which have machines of their own.
    os.nice(5)
    anyio.run(_serve, connection, decided, slot, backend="asyncio")


async def _serve(connection: Any, decided: Any, slot: int) -> None:
    host = Host(decided, slot)
    try:
        while True:
            message = await anyio.to_thread.run_sync(connection.recv)
            if message is None:
                break
            command, args = message
            try:
                reply: tuple[str, Any] = ("ok", await host.handle(command, args))
            except Exception:
                reply = ("error", traceback.format_exc())
            connection.send(reply)
    finally:
        await host.aclose()
        connection.close()


class WorkerHost:
    """A :class:`Host` in a spawned OS process, driven through a pipe."""

    def __init__(self, context: Any, decided: Any, index: int) -> None:
        self.label = f"process {index}"
        self._connection, child = context.Pipe()
        self._process = context.Process(
            target=_worker,
            args=(child, decided, index),
            name=f"stampede-host-{index}",
            daemon=True,
        )
        self._process.start()
        child.close()

    def _receive(self) -> Any:
        deadline = time.monotonic() + HOST_TIMEOUT
        while not self._connection.poll(0.2):
            if not self._process.is_alive():
                raise HostError(f"{self.label} died (exit code {self._process.exitcode})")
            if time.monotonic() > deadline:
                raise HostError(f"{self.label} did not answer in {HOST_TIMEOUT:g} s")
        return self._connection.recv()

    async def request(self, command: str, *args: Any) -> Any:
        self._connection.send((command, args))
        status, value = await anyio.to_thread.run_sync(self._receive)
        if status != "ok":
            raise HostError(f"{self.label}: {command} failed:\n{value}")
        return value

    async def aclose(self) -> None:
        try:
            if self._process.is_alive():
                self._connection.send(None)
            await anyio.to_thread.run_sync(self._process.join, 15)
        finally:
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
            self._connection.close()


AnyHost = LocalHost | WorkerHost


# -- the run --------------------------------------------------------------------------------


@dataclass(slots=True)
class Volley:
    """What one round did for one breaker."""

    round: Round
    fire_skew: float  # the latest host's firing instant minus the earliest's
    at_server: int  # calls the downstream counted under this round's name
    reached: int  # calls the breakers invoked
    ok: int
    failed: int
    rejected: int
    late: int  # reached after the first call that got through had been answered
    environments_through: int  # environments with at least one call through
    settled: float  # from firing to the last caller's decision, seconds
    first_reach: float | None  # seconds after firing
    store_requests: Counter[str]
    store_kind: str
    warnings: int
    warning_examples: list[str]
    # Each call that got through, when few did: (reached, answered, attempt returned,
    # environment, outcome), times in seconds after firing.
    through: list[tuple[float, float, float, int, str]] = field(default_factory=list)

    @property
    def in_flight(self) -> int:
        """Calls that reached the downstream before the first of them was answered:
        the stampede proper, and the figure the verdict is about."""
        return self.reached - self.late

    def cell(self) -> str:
        """The main table's cell: the stampede, and what got through after it."""
        return f"{self.in_flight:,}" + (f" (+{self.late:,} after)" if self.late else "")

    def as_json(self) -> dict[str, Any]:
        first = None if self.first_reach is None else round(self.first_reach * 1000, 1)
        return {
            "round": self.round.number,
            "cycle": self.round.cycle,
            "downstream": "failing" if self.round.fails else "recovered",
            "reached_while_first_probe_in_flight": self.in_flight,
            "reached_after_first_answer": self.late,
            "reached_downstream_counted_at_server": self.at_server,
            "invoked_by_breakers": self.reached,
            "ok": self.ok,
            "failed": self.failed,
            "rejected": self.rejected,
            "environments_through": self.environments_through,
            "all_decided_after_ms": round(self.settled * 1000, 1),
            "first_reach_after_ms": first,
            "host_fire_skew_ms": round(self.fire_skew * 1000, 1),
            "store_server": self.store_kind,
            "store_requests": dict(sorted(self.store_requests.items())),
            "aiocircuit_warnings": self.warnings,
            "aiocircuit_warning_examples": self.warning_examples,
            "calls_through": [
                {
                    "environment": environment,
                    "reached_after_ms": round(reached * 1000, 1),
                    "answered_after_ms": round(answered * 1000, 1),
                    "breaker_returned_after_ms": round(returned * 1000, 1),
                    "outcome": outcome,
                }
                for reached, answered, returned, environment, outcome in self.through
            ],
        }


@dataclass(slots=True)
class BreakerRun:
    """Everything one breaker did in the run."""

    name: str
    store: str = ""
    unavailable: str | None = None
    volleys: list[Volley] = field(default_factory=list)
    setup_calls: int = 0  # calls that reached the downstream while tripping and priming
    unprimed: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Servers:
    downstream: Any
    moto: Any
    redis: Any
    shared: SharedStores


STORES = {
    "aiocircuit": "DynamoDB (moto)",
    "aws-lambda-powertools": "DynamoDB (moto)",
    "purgatory": "Redis",
    "aiobreaker": "Redis (sync client)",
    "pybreaker": "Redis",
    "circuitbreaker": "none (per environment)",
}
REDIS_BREAKERS = ("purgatory", "aiobreaker", "pybreaker")


class Stampede:
    """Drives the hosts through the cycles and counts what each volley did."""

    def __init__(
        self,
        hosts: list[AnyHost],
        layout: list[list[int]],
        decided: Any,
        breakers: list[str],
        servers: Servers,
        mode: Mode,
        delay_ms: int,
        progress: _report.Progress,
    ) -> None:
        self.hosts = hosts
        self.layout = layout
        self.decided = decided
        self.servers = servers
        self.mode = mode
        self.settings = mode.settings
        self.delay_ms = delay_ms
        self.progress = progress
        self.callers = sum(len(environments) for environments in layout) * mode.tasks
        self.runs = {name: BreakerRun(name, store=STORES[name]) for name in breakers}
        self.opened: dict[str, float] = {}  # wall clock by which the circuit last (re)opened
        # Time for the firing instant to reach every host: a pipe and a wake-up.
        self.fire_lead = 0.05 if isinstance(hosts[0], LocalHost) else 0.8

    def live(self) -> list[str]:
        return [name for name, run in self.runs.items() if run.unavailable is None]

    async def _all(self, command: str, *args: Any) -> list[Any]:
        results: list[Any] = [None] * len(self.hosts)
        errors: list[HostError] = []

        async def one(index: int, host: AnyHost) -> None:
            try:
                results[index] = await host.request(command, *args)
            except HostError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for index, host in enumerate(self.hosts):
                tg.start_soon(one, index, host)
        if errors:
            raise errors[0]
        return results

    async def _drop(self, breaker: str, error: BaseException) -> None:
        """A breaker that broke at run time is reported n/a with the exception."""
        lines = str(error).strip().splitlines()
        last = lines[-1] if lines else repr(error)
        self.runs[breaker].unavailable = f"broke at run time: {last}"
        for host in self.hosts:
            with contextlib.suppress(HostError):
                await host.request("drop", breaker)

    async def setup(self, redis_reason: str | None) -> None:
        settings = dataclasses.asdict(self.settings)
        shared = dataclasses.asdict(self.servers.shared)
        setup = (
            "setup",
            list(self.runs),
            self.mode.tasks,
            settings,
            shared,
            self.servers.downstream.url,
            self.delay_ms,
        )
        replies: list[dict[str, str | None]] = [{} for _ in self.hosts]

        async def one(index: int) -> None:
            command, breakers, *rest = setup
            replies[index] = await self.hosts[index].request(
                command, breakers, self.layout[index], *rest
            )

        async with anyio.create_task_group() as tg:
            for index in range(len(self.hosts)):
                tg.start_soon(one, index)
        for name, run in self.runs.items():
            reasons = [r for reply in replies if (r := reply.get(name)) is not None]
            if name in REDIS_BREAKERS and redis_reason:
                reasons.insert(0, redis_reason)  # rather than "no Redis server"
            if reasons:
                run.unavailable = reasons[0]
                await self._all("drop", name)
        self.progress.advance(detail="environments built")
        await self._all("warm")
        self.progress.advance(detail="clients warm")

    async def prime(self, breakers: list[str], only_first: bool, limit: int, name: str) -> None:
        """Every environment (or environment 0 alone: the trip) calls until rejected."""
        live = [name for name in breakers if self.runs[name].unavailable is None]
        if not live:
            return
        if only_first:
            replies = [await self.hosts[0].request("prime", live, [0], limit, name)]
        else:
            replies = await self._all("prime", live, None, limit, name)
        for breaker in live:
            errors = [reply[breaker]["error"] for reply in replies if reply[breaker]["error"]]
            if errors:
                await self._drop(breaker, RuntimeError(errors[0]))
                continue
            reached = sum(reply[breaker]["reached"] for reply in replies)
            self.runs[breaker].setup_calls += reached
            if reached:
                last = max(reply[breaker]["last_reach_end"] for reply in replies)
                self.opened[breaker] = max(self.opened.get(breaker, 0.0), last)
            unprimed = [e for reply in replies for e in reply[breaker]["unprimed"]]
            if unprimed:
                self.runs[breaker].unprimed.append(
                    f"{name}: {len(unprimed)} environment(s) never saw a rejection"
                )

    async def volley(self, breaker: str, round_: Round) -> None:
        """Fire every caller of ``breaker`` at once, once its circuit is due to recover."""
        run = self.runs[breaker]
        due = self.opened.get(breaker, 0.0) + self.settings.recovery_timeout + MARGIN
        fire_at = max(due, time.time() + self.fire_lead)
        name = round_.server_name(breaker)
        target = sum(self.decided) + self.callers
        redis = self.servers.redis
        before_moto = self.servers.moto.snapshot()
        if redis is not None:
            await anyio.to_thread.run_sync(redis.reset_counts)
        try:
            replies = await self._all("volley", breaker, name, fire_at, target, self.mode.hold_cap)
        except HostError as exc:
            await self._drop(breaker, exc)
            return
        ended = time.time()
        moto = self.servers.moto.snapshot()
        moto.subtract(before_moto)
        stats = await anyio.to_thread.run_sync(self.servers.downstream.stats)
        if run.store.startswith("DynamoDB"):
            requests, kind = +moto, "moto"
        elif run.store.startswith("Redis") and redis is not None:
            requests, kind = +(await anyio.to_thread.run_sync(redis.commands)), "Redis"
        else:
            requests, kind = Counter(), "none"
        fired = min(reply["fired"] for reply in replies)
        records = [CallRecord(*r) for reply in replies for r in reply["records"]]
        through = [r for r in records if r.reached is not None]
        reach_times = [r.reached for r in through if r.reached is not None]
        first_answer = min((r.answered or r.ended for r in through), default=math.inf)
        outcomes = Counter(r.outcome for r in records)
        volley = Volley(
            round=round_,
            fire_skew=max(reply["fired"] for reply in replies) - fired,
            at_server=int(stats["calls"].get(name, 0)),
            reached=len(through),
            ok=outcomes[Outcome.OK.value],
            failed=outcomes[Outcome.FAILED.value],
            rejected=outcomes[Outcome.REJECTED.value],
            late=sum(1 for t in reach_times if t >= first_answer),
            environments_through=len({r.environment for r in through}),
            settled=max((r.decided for r in records), default=fired) - fired,
            first_reach=min(reach_times, default=None),
            store_requests=requests,
            store_kind=kind,
            warnings=sum(reply["warnings"] for reply in replies),
            warning_examples=[w for reply in replies for w in reply["warning_examples"]][:3],
        )
        if volley.first_reach is not None:
            volley.first_reach -= fired
        if len(through) <= THROUGH_DETAIL:
            volley.through = sorted(
                (
                    (r.reached or fired) - fired,
                    (r.answered or r.ended) - fired,
                    r.ended - fired,
                    r.environment,
                    r.outcome,
                )
                for r in through
            )
        run.volleys.append(volley)
        if round_.fails and volley.reached:
            self.opened[breaker] = ended  # the failed calls (re)opened it by now
        self.progress.advance(detail=f"{round_.label}: {breaker}: {volley.at_server:,}")

    async def cycle(self, cycle: int, first_round: int) -> None:
        """Trip, prime, a round whose probe fails, prime again, a round whose probe
        succeeds."""
        downstream = self.servers.downstream
        threshold = self.settings.failure_threshold
        if cycle > 1:
            # Let every cached view see the closed circuit before tripping it again.
            await anyio.sleep(self.settings.local_cache_max_age + 1)
        await anyio.to_thread.run_sync(downstream.failing, True)
        await self.prime(self.live(), True, 3 * threshold, f"c{cycle}-trip")
        # Prime late enough that every cached "open" is still fresh when the volley
        # fires (local_cache_max_age), early enough to end before the circuits are due.
        await anyio.sleep(max(0.0, self.settings.recovery_timeout - 2.0))
        await self.prime(self.live(), False, threshold + 1, f"c{cycle}-prime")
        self.progress.advance(detail=f"cycle {cycle}: tripped and primed")
        failing = Round(cycle, first_round, fails=True)
        for breaker in self.live():
            await self.volley(breaker, failing)
            # At once, before the reopened circuit is due again: every environment sees
            # it open (the downstream still fails, so a call that got through would
            # reopen it again, and the round after would wait for that).
            await self.prime([breaker], False, threshold + 1, f"c{cycle}-prime-again")
        await anyio.to_thread.run_sync(downstream.failing, False)
        self.progress.advance(detail=f"cycle {cycle}: primed again, downstream recovered")
        recovering = Round(cycle, first_round + 1, fails=False)
        for breaker in self.live():
            await self.volley(breaker, recovering)


async def _run(mode: Mode, breakers: list[str], delay_ms: int) -> dict[str, BreakerRun]:
    from aiocircuit.persistence.dynamodb import DynamoDBPersistence

    from . import _downstream, _redis

    redis_reason = _redis.unavailable()
    with contextlib.ExitStack() as stack:
        moto = stack.enter_context(_moto.CountingMotoServer())
        downstream = stack.enter_context(_downstream.Downstream())
        redis = None if redis_reason else stack.enter_context(_redis.RedisServer())
        table = f"benchmark-stampede-{os.getpid()}"
        await DynamoDBPersistence.create_table(table, endpoint_url=moto.url)
        shared = SharedStores(
            dynamodb_url=moto.url,
            dynamodb_table=table,
            redis_url=None if redis is None else redis.url,
        )
        servers = Servers(downstream, moto, redis, shared)
        context = multiprocessing.get_context("spawn")
        hosts: list[AnyHost]
        if mode.processes:
            decided = context.RawArray("q", mode.processes)
            hosts = [WorkerHost(context, decided, i) for i in range(mode.processes)]
            layout = [
                list(range(i, mode.environments, mode.processes)) for i in range(mode.processes)
            ]
        else:
            decided = context.RawArray("q", 1)
            hosts = [LocalHost(decided)]
            layout = [list(range(mode.environments))]
        steps = 2 + mode.cycles * (2 + 2 * len(breakers))
        try:
            with _report.Progress("stampede", steps) as progress:
                stampede = Stampede(
                    hosts, layout, decided, breakers, servers, mode, delay_ms, progress
                )
                await stampede.setup(redis_reason)
                for cycle in range(1, mode.cycles + 1):
                    await stampede.cycle(cycle, 2 * cycle - 1)
        finally:
            for host in hosts:
                await host.aclose()
        return stampede.runs


# -- report ---------------------------------------------------------------------------------


def _rounds(runs: dict[str, BreakerRun]) -> list[Round]:
    seen: dict[int, Round] = {}
    for run in runs.values():
        for volley in run.volleys:
            seen.setdefault(volley.round.number, volley.round)
    return [seen[n] for n in sorted(seen)]


def _shown_na(run: BreakerRun) -> bool:
    """Shown as n/a throughout: it never ran a round."""
    return run.unavailable is not None and not run.volleys


def _main_table(runs: dict[str, BreakerRun], rounds: list[Round]) -> str:
    headers = ["breaker", "shared store", *(r.label for r in rounds), "target"]
    rows = []
    for name, run in runs.items():
        target = str(TARGET) if name == "aiocircuit" else "-"
        if _shown_na(run):
            rows.append([name, "-", *(["n/a"] * len(rounds)), target])
            continue
        by_round = {v.round.number: v for v in run.volleys}
        cells = [by_round[r.number].cell() if r.number in by_round else "n/a" for r in rounds]
        rows.append([name, run.store, *cells, target])
    return _report.table(headers, rows)


def _store_text(volley: Volley) -> str:
    counts = volley.store_requests
    if volley.store_kind == "moto":
        return f"Get {counts['GetItem']}, Put {counts['PutItem']}, Update {counts['UpdateItem']}"
    if volley.store_kind == "Redis":
        return f"{counts.total():,} commands"
    return "-"


def _detail_table(runs: dict[str, BreakerRun]) -> str:
    headers = (
        "breaker",
        "round",
        "at server",
        "invoked",
        "in flight",
        "after",
        "ok",
        "failed",
        "rejected",
        "envs",
        "decided ms",
        "store requests",
    )
    rows = [
        [
            name,
            str(v.round.number),
            f"{v.at_server:,}",
            f"{v.reached:,}",
            f"{v.in_flight:,}",
            f"{v.late:,}",
            f"{v.ok:,}",
            f"{v.failed:,}",
            f"{v.rejected:,}",
            str(v.environments_through),
            f"{v.settled * 1000:.0f}",
            _store_text(v),
        ]
        for name, run in runs.items()
        for v in run.volleys
    ]
    return _report.table(headers, rows)


def _headlines(runs: dict[str, BreakerRun], shape: str) -> list[_report.Headline]:
    headlines = []
    for name, run in runs.items():
        what = f"stampede, {name}: calls reaching the downstream per probe round ({shape})"
        if _shown_na(run):
            headlines.append(_report.Headline(what, f"n/a: {run.unavailable}"))
            continue
        counts = [v.in_flight for v in run.volleys]
        value = ", ".join(v.cell() for v in run.volleys)
        if run.unavailable is not None:
            value += f" (then n/a: {run.unavailable})"
        if name == "aiocircuit":
            met = all(c == TARGET for c in counts) and run.unavailable is None
            target = f"exactly {TARGET} in every round"
            headlines.append(_report.Headline(what, value, target, met))
        else:
            headlines.append(_report.Headline(what, value))
    return headlines


def _chart(runs: dict[str, BreakerRun], rounds: list[Round], shape: str, callers: int) -> str:
    """Grouped bars per round and breaker, log scale: filled, the calls that reached the
    downstream while the first probe was in flight; outlined, every call that reached it
    in the round."""
    reason = _report.charts_unavailable()
    if reason is not None:
        return f"chart: n/a: {reason}"
    if not rounds:
        return "chart: n/a: no round ran"
    plt = _report.pyplot()
    names = list(runs)
    width = 0.8 / len(names)
    figure, axes = plt.subplots(figsize=(10, 5.2))
    for k, name in enumerate(names):
        run = runs[name]
        by_round = {v.round.number: v for v in run.volleys}
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(rounds))]
        volleys = [by_round.get(r.number) for r in rounds]
        colour = _report.colour(name)
        label = name if not _shown_na(run) else f"{name}: n/a"
        axes.bar(xs, [v.in_flight if v else 0 for v in volleys], width, color=colour, label=label)
        axes.bar(
            xs,
            [v.reached if v and v.late else 0 for v in volleys],
            width,
            fill=False,
            edgecolor=colour,
            linewidth=0.8,
        )
        for x, v in zip(xs, volleys, strict=True):
            text = "n/a" if v is None else f"{v.in_flight:,}"
            height = 0.55 if v is None else max(v.in_flight, 0.55)
            axes.text(x, height, text, ha="center", va="bottom", fontsize=7)
    axes.set_yscale("log")
    axes.set_ylim(0.5, callers * 6)
    axes.axhline(TARGET, color="black", linestyle="--", linewidth=0.8, label="ideal: 1")
    axes.axhline(callers, color="grey", linestyle=":", linewidth=0.8, label="every caller")
    axes.set_xticks(range(len(rounds)), [r.label for r in rounds])
    axes.set_ylabel("calls that reached the downstream (log scale)")
    axes.set_title(
        f"Half-open stampede: {shape} call at the moment of recovery\n"
        "filled: while the first probe was in flight; outline: all in the round",
        fontsize=9,
    )
    axes.legend(fontsize=7, loc="upper left", ncols=4)
    return f"chart written to {_report.save_chart(figure, SCENARIO)}"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks stampede",
        description="Half-open stampede: calls that reach a recovering downstream when "
        "a fleet of environments calls at the moment of recovery.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK.environments} environments x {QUICK.tasks} tasks in this process, "
        f"{QUICK.cycles} cycle (about 20 s), instead of {DEFAULT.environments} x "
        f"{DEFAULT.tasks} in {DEFAULT.processes} processes, {DEFAULT.cycles} cycles",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="host the environments in this many spawned processes (0: in this one)",
    )
    parser.add_argument("--cycles", type=int, default=None, help="trip/fail/recover cycles")
    parser.add_argument("--environments", type=int, default=None, help="environments")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per environment")
    parser.add_argument(
        "--delay-ms",
        type=int,
        default=PROBE_DELAY_MS,
        help=f"how long the downstream takes to answer (default {PROBE_DELAY_MS})",
    )
    parser.add_argument(
        "--breaker",
        action="append",
        choices=BREAKERS,
        help="run only this breaker (repeatable); the others are shown as n/a",
    )
    return parser.parse_args(argv)


def _mode(args: argparse.Namespace) -> Mode:
    base = QUICK if args.quick else DEFAULT
    overrides = {
        key: value
        for key in ("processes", "cycles", "environments", "tasks")
        if (value := getattr(args, key)) is not None
    }
    return dataclasses.replace(base, **overrides)


def main(argv: list[str] | None = None) -> int:
    """Run the stampede, print the tables, write the JSON and the chart. 0 whatever was
    counted."""
    args = _parse_args(argv)
    mode = _mode(args)
    selected = list(args.breaker or BREAKERS)
    callers = mode.environments * mode.tasks
    shape = f"{mode.environments} environments x {mode.tasks} tasks"
    hosting = f"{mode.processes} spawned processes" if mode.processes else "this one process"
    missing = _moto.missing_requirements()
    if missing:
        print(
            f"stampede: NOT RUN: needs {', '.join(missing)} ({_moto.INSTALL_HINT})",
            file=sys.stderr,
        )
        return 0
    print(
        f"half-open stampede, {mode.name} mode: {shape} per breaker, hosted in {hosting}; "
        f"{mode.cycles} cycle(s) of 2 rounds; the downstream answers after {args.delay_ms} ms",
        flush=True,
    )
    started = time.perf_counter()
    ran = anyio.run(functools.partial(_run, mode, selected, args.delay_ms), backend="asyncio")
    elapsed = time.perf_counter() - started
    runs = {
        name: ran.get(name) or BreakerRun(name, unavailable="not selected (--breaker)")
        for name in BREAKERS
    }
    rounds = _rounds(runs)

    print()
    print(_main_table(runs, rounds))
    print()
    print(_detail_table(runs))
    print(
        "\nat server: calls the downstream counted; invoked: calls the breakers let run "
        "(must agree);\nin flight: of those, reached before the first had been answered; "
        "after: reached later;\nenvs: environments with a call through; decided ms: from "
        "firing to the last caller's\ndecision (rejected or let through); store requests: "
        "counted at the server during the round."
    )
    aiocircuit = runs.get("aiocircuit")
    if aiocircuit is not None and aiocircuit.volleys:
        paths = "; ".join(
            f"round {v.round.number}: {v.store_requests['GetItem']} GetItem + "
            f"{v.store_requests['UpdateItem']} UpdateItem"
            for v in aiocircuit.volleys
        )
        print(
            f"aiocircuit at moto: {paths}\n(0 GetItem: every environment acted on its "
            "cached 'open' at the recovery deadline, without reading the store)"
        )
    for name, run in runs.items():
        if run.unavailable is not None:
            print(f"{name}: n/a: {run.unavailable}")
        for note in run.unprimed:
            print(f"{name}: note: {note}")
        for v in run.volleys:
            if v.warnings:
                print(
                    f"{name}: round {v.round.number}: {v.warnings} aiocircuit warning(s), "
                    f"first: {v.warning_examples[:1]}"
                )
            if v.fire_skew > FIRE_SKEW_NOTE:
                print(
                    f"{name}: round {v.round.number}: one host fired {v.fire_skew * 1000:.0f} "
                    "ms after another (a busy machine): its callers came late"
                )
            if v.at_server != v.reached:
                print(
                    f"{name}: round {v.round.number}: the server counted {v.at_server} "
                    f"calls, the breakers invoked {v.reached}"
                )
    headlines = _headlines(runs, shape)
    print()
    for h in headlines:
        print(f"{_report.verdict(h.met):>6}  {h.what}: {h.value}")

    payload = {
        "mode": mode.name,
        "environments": mode.environments,
        "tasks_per_environment": mode.tasks,
        "callers_per_round": callers,
        "hosting": hosting,
        "processes": mode.processes,
        "cycles": mode.cycles,
        "downstream_delay_ms": args.delay_ms,
        "hold_quiet_seconds": QUIET,
        "hold_cap_seconds": mode.hold_cap,
        "fire_margin_seconds": MARGIN,
        "settings": dataclasses.asdict(mode.settings),
        "elapsed_seconds": round(elapsed, 1),
        "rounds": [
            {"round": r.number, "cycle": r.cycle, "downstream": "failing" if r.fails else "ok"}
            for r in rounds
        ],
        "breakers": {
            name: (
                _report.na(run.unavailable or "")
                if _shown_na(run)
                else {
                    "store": run.store,
                    "broke_later": run.unavailable,
                    "setup_calls_reached": run.setup_calls,
                    "priming_notes": run.unprimed,
                    "rounds": [v.as_json() for v in run.volleys],
                }
            )
            for name, run in runs.items()
        },
    }
    path = _report.write_json(SCENARIO, payload, headlines)
    print(f"\nresults written to {path}")
    print(_chart(runs, rounds, shape, callers))
    print(f"({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
