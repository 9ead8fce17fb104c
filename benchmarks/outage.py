"""Outage behaviour: the calls per second that reach a downstream while it fails for 5 s.

This is the picture a user of any circuit breaker wants first: the downstream goes down,
the breaker should stop sending it traffic almost at once, let a probe through now and
then, and put the traffic back soon after the downstream recovers. Every breaker
(aiocircuit, the five peers, and no breaker at all as the baseline) gets the same load in
the same wall-clock timeline against the same outage, so that their curves can be set
side by side on one time axis.

How it measures, and why:

* Timeline: 2 s healthy, then 5 s during which the downstream answers every call with 503
  (``Downstream.outage``), then a tail after the recovery (5 s; 3 s in quick mode). The
  downstream takes ``DELAY_MS`` (20 ms) to answer, failures included, as a real service
  does: with an instant downstream no call is ever in flight when the circuit trips or
  while a probe runs, and the differences between breakers that a user would meet
  (calls in flight at the trip, callers let in beside a probe, a lock held across the
  call) could not show. ``--delay-ms 0`` runs the idealised case.
* The same settings for all: ``failure_threshold`` 5, ``recovery_timeout`` 2 s,
  ``success_threshold`` 1 where the breaker has one; state in memory, except Powertools,
  whose only store is DynamoDB: it runs on moto's server (``benchmarks/_moto.py``) in
  this process, its table made by aiocircuit's ``DynamoDBPersistence.create_table``.
* Offered load: ``RATE`` (100) calls per second per breaker, shared by ``TASKS`` (20)
  tasks, open loop on a schedule: call ``i`` is due ``(i + 0.5) / RATE`` s after the
  start and task ``i % TASKS`` makes it; a task that is late starts its next call at
  once instead of skipping it. So how long a call or a rejection takes cannot change how
  many calls are offered, only how late they start; lateness is recorded (``late p99``),
  and a call still waiting for its turn when the timeline ends is not made. The load is
  defined by the schedule: "offered in a bucket" counts the calls due in it. The
  half-period offset keeps calls off the 100 ms bucket edges. 100 calls/s rather than
  more, because seven processes share a 2-core machine with the downstream.
* Each breaker runs in its own OS process, so that a peer that blocks its event loop or
  holds the GIL slows only itself. The processes are forked from this one after it has
  imported every library (seven fresh interpreters importing them would spend several
  CPU-seconds before the first call), then each builds its breaker and warms it up with
  a few calls to another path of the downstream (connections, threads, Powertools'
  cache), and only then are they all given the start time, a whole second a little
  ahead. Async breakers call through one ``aiohttp.ClientSession`` per process (a third
  of httpx's CPU per call here); sync ones (Powertools, pybreaker) run each call in a
  worker thread through an ``httpx.Client``, as ``benchmarks/_contenders.py`` runs them.
* Counts of what reached the downstream come from the downstream (its own process,
  ``benchmarks/_downstream.py``), per breaker and per 100 ms of wall time as calls
  arrive, never from the breakers. Each worker also records every call it offered (when
  it started and ended, and whether it was ok, failed or rejected) and sends that back:
  that gives the failed/rejected split and the moment of the first rejection. A
  mismatch between what a worker says reached the downstream and what the downstream
  counted is printed.
* Whole seconds: aiocircuit and Powertools keep ``opened_at`` as a whole Unix second
  rounded down, as the DynamoDB layout does, so their probe may come up to 1 s before
  ``recovery_timeout`` has passed since the trip (documented in docs/fleet.md). Starting
  the outage on a whole second makes that rounding as small as it gets: the time the
  trip took (about 70 ms). It is still why they are back about 0.1-0.2 s before the
  peers that time ``recovery_timeout`` from the trip itself (and from each failed
  probe, drifting by a probe's duration each cycle).

What is reported per breaker (medians over rounds; the default mode repeats the timeline
``rounds`` times in the same processes with a fresh circuit each time; the chart shows
the median per 100 ms bucket over the rounds, so that a stall of the shared machine in
one round does not dent every curve):

* healthy: calls that reached the downstream before the outage / calls offered then.
* reached in outage: the calls the downstream answered with 503 (they arrived during the
  outage) / the calls due during it, and that share.
* stopped after: from the outage's start to the first rejection a breaker answered.
* back >= 90% after: from the outage's end to the first 100 ms bucket from which 0.5 s
  (5 buckets) of arrivals add up to at least 90 % of the calls offered in them (of 90 %
  of what the breaker carried while healthy, if that was less). Resolution 0.1 s. With
  ``recovery_timeout`` 2 s and a 5 s outage, a breaker that trips at once probes about 2,
  4 and 6 s into the outage, and the third probe is the first that can succeed: about
  1 s after the recovery is the configuration's share of this figure, not the breaker's.
* failed / rejected: the outcome of every call offered, as the worker saw it.

There is no target: the chart is what this scenario is for. The exit status is 0 whatever
happened.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import math
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from . import _moto, _report
from ._contenders import (
    BREAKERS,
    NO_BREAKER,
    Call,
    Contender,
    DownstreamError,
    Outcome,
    Settings,
    SharedStores,
    Unavailable,
    Unprotected,
    build,
    downstream_call,
)

SCENARIO = "outage"
POWERTOOLS = "aws-lambda-powertools"
LINES = (*BREAKERS, NO_BREAKER)  # table and chart order; the baseline last

BUCKET = 0.1  # the downstream's bucket, in seconds
RATE = 100  # calls offered per second, per breaker
TASKS = 20  # concurrent tasks sharing those calls
DELAY_MS = 20  # how long the downstream takes to answer (see the module docstring)
HEALTHY = 2.0  # seconds before the outage
OUTAGE = 5.0  # seconds of outage
SETTINGS = Settings(failure_threshold=5, recovery_timeout=2, success_threshold=1)
RECOVERED_SHARE = 0.9  # "traffic is back": at least this share of the offered calls...
RECOVERED_BUCKETS = 5  # ... over this many 100 ms buckets in a row
TABLE_NAME = "benchmark-outage"
NOT_STARTED = "not started"  # a call still waiting for its turn when the timeline ended

_PRELOAD = (
    "aiohttp",
    "httpx",
    "aiocircuit",
    "aiocircuit.persistence",
    "purgatory",
    "aiobreaker",
    "pybreaker",
    "circuitbreaker",
    "boto3",
    "aws_lambda_powertools.utilities.circuit_breaker",
    "aws_lambda_powertools.utilities.circuit_breaker.persistence",
    "benchmarks._contenders",
    "benchmarks._moto",
)


def _processes() -> Any:
    """Where worker processes come from: a fork server that imported ``_PRELOAD`` once,
    so that seven fresh interpreters need not each spend a CPU-second or more importing
    aiohttp, boto3 and the peers on a 2-core machine. A fork server rather than a fork of
    this process, which ``python -m benchmarks`` shares with the scenarios run before
    this one, threads and all (a multi-threaded process may deadlock in a forked child).
    Where there is no fork server (Windows), workers are spawned."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(_PRELOAD))  # if the server is not yet up
    return context


# The name a worker imports this module by: run as ``python -m benchmarks.outage``, it
# is ``__main__`` here, which a worker must not re-run.
_MODULE = __spec__.name if __spec__ is not None else __name__


@dataclass(frozen=True, slots=True)
class Mode:
    """How often the timeline runs and how long its tail after the recovery lasts."""

    name: str
    rounds: int
    tail: float

    @property
    def duration(self) -> float:
        return HEALTHY + OUTAGE + self.tail


QUICK = Mode("quick", rounds=1, tail=3.0)
DEFAULT = Mode("default", rounds=3, tail=5.0)


# -- the worker process: one breaker, offered the load -----------------------------------


def _slug(breaker: str) -> str:
    """The downstream path segment of a breaker's calls."""
    return breaker.replace(" ", "-")


def _wait_for_command(connection: Connection) -> dict[str, Any] | None:
    # Sibling workers may hold copies of the parent's end of this pipe, so its closing
    # need not show here as EOF: the parent says "quit", and a parent that died is noticed.
    parent = multiprocessing.parent_process()
    while not connection.poll(0.5):
        if parent is not None and not parent.is_alive():
            return None
    try:
        message: dict[str, Any] = connection.recv()
    except EOFError:
        return None
    return None if "quit" in message else message


async def _receive(connection: Connection) -> dict[str, Any] | None:
    """The next command from the parent; ``None`` when it is time to exit."""
    return await anyio.to_thread.run_sync(_wait_for_command, connection)


async def _contender(breaker: str, circuit: str, plan: dict[str, Any]) -> Contender:
    if breaker == NO_BREAKER:
        return Unprotected()
    shared = None
    if breaker == POWERTOOLS:
        shared = SharedStores(dynamodb_url=plan["dynamodb_url"], dynamodb_table=plan["table"])
    return await build(breaker, circuit, Settings(**plan["settings"]), shared)


def _downstream_call(url: str, session: Any, sync_client: Any) -> Call:
    """``downstream_call``, but awaited through aiohttp rather than httpx: a third of the
    CPU per call (about 0.2 ms against 0.7 ms here), which matters with seven processes
    calling at once on two cores. Sync breakers keep httpx's sync client."""
    sync_call = downstream_call(url, None, sync_client)

    async def run() -> object:
        try:
            async with session.get(url) as response:
                await response.read()
        except Exception as exc:
            raise DownstreamError(f"{type(exc).__name__}: {exc}") from exc
        if response.status != 200:
            raise DownstreamError(f"HTTP {response.status}")
        return response.status

    return Call(run, sync_call.run_sync)


async def _offer(
    contender: Contender, call: Any, start: float, plan: dict[str, Any]
) -> list[list[Any]]:
    """Offer the scheduled calls from wall time ``start``; one record per call:
    ``[started (ms from start), outcome, late (ms), took (ms)]``."""
    rate, tasks = plan["rate"], plan["tasks"]
    total = round(rate * plan["duration"])
    records: list[list[Any]] = [[] for _ in range(total)]
    origin = time.monotonic() + (start - time.time())  # the monotonic clock at ``start``
    end = origin + plan["duration"]

    async def offer(first: int) -> None:
        for i in range(first, total, tasks):
            due = origin + (i + 0.5) / rate
            delay = due - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            began = time.monotonic()
            if began > end:  # so far behind that the timeline is over: not made at all
                records[i] = [None, NOT_STARTED, round((began - due) * 1000, 2), 0.0]
                continue
            outcome = await contender.attempt(call)
            took = time.monotonic() - began
            records[i] = [
                round((began - origin) * 1000, 2),
                outcome.value,
                round((began - due) * 1000, 2),
                round(took * 1000, 2),
            ]

    async with anyio.create_task_group() as group:
        for first in range(min(tasks, total)):
            group.start_soon(offer, first)
    return records


async def _serve(breaker: str, connection: Connection) -> None:
    """Answer the parent's commands: ``prepare`` a fresh circuit (answers ``ready``,
    ``unavailable`` or ``error``), then ``start`` at a wall time (answers ``result``);
    until the parent closes the connection."""
    import aiohttp
    import httpx

    _moto.use_fake_aws_credentials()
    connector = aiohttp.TCPConnector(limit=4 * TASKS)
    limits = httpx.Limits(max_connections=4 * TASKS, max_keepalive_connections=4 * TASKS)
    async with aiohttp.ClientSession(connector=connector) as session:
        with httpx.Client(limits=limits) as sync_client:
            connection.send({"hello": os.getpid()})
            while (message := await _receive(connection)) is not None:
                plan = message["prepare"]
                base = f"{plan['downstream']}/c/{_slug(breaker)}"
                query = f"?delay_ms={plan['delay_ms']}" if plan["delay_ms"] else ""
                try:
                    contender = await _contender(breaker, plan["circuit"], plan)
                except Unavailable as exc:
                    connection.send({"unavailable": str(exc)})
                    continue
                except Exception as exc:
                    connection.send({"error": f"{type(exc).__name__}: {exc}"})
                    continue
                try:
                    warm_up = _downstream_call(base + "-warm-up", session, sync_client)
                    async with anyio.create_task_group() as group:
                        for _ in range(plan["tasks"]):
                            group.start_soon(contender.attempt, warm_up)
                    # Everything alive now (the libraries, the clients, the breaker) is
                    # left out of the collector's passes from here on: a full collection
                    # over all that was imported takes about 50 ms here, a hole in a
                    # curve that would owe nothing to the breaker.
                    gc.collect()
                    gc.freeze()
                    connection.send({"ready": {"store": contender.store, "kind": contender.kind}})
                    command = await _receive(connection)
                    if command is None:
                        break
                    call = _downstream_call(base + query, session, sync_client)
                    records = await _offer(contender, call, command["start"], plan)
                    connection.send({"result": {"calls": records}})
                except Exception as exc:  # a peer that breaks at run time is reported n/a
                    connection.send({"error": f"{type(exc).__name__}: {exc}"})
                finally:
                    await contender.aclose()


def _worker(breaker: str, connection: Connection, stderr: str) -> None:
    """A worker process's body: stderr into the file ``stderr`` (the parent shows its
    end if the process dies), then serve."""
    with open(stderr, "a") as file:
        os.dup2(file.fileno(), 2)
    anyio.run(_serve, breaker, connection, backend="asyncio")


# -- the parent: processes, timeline, counts ------------------------------------------


class WorkerError(Exception):
    """A worker process died or did not answer in time; the message says how."""


class _Worker:
    """One breaker's worker process, and the pipe to it."""

    def __init__(self, breaker: str) -> None:
        self.breaker = breaker
        descriptor, self._stderr = tempfile.mkstemp(prefix="outage-", suffix=".stderr")
        os.close(descriptor)
        processes = _processes()
        self._connection, theirs = processes.Pipe()
        self._process = processes.Process(
            target=importlib.import_module(_MODULE)._worker,
            args=(breaker, theirs, self._stderr),
            name=f"outage worker: {breaker}",
            daemon=True,
        )
        self._process.start()
        theirs.close()

    def send(self, message: dict[str, Any]) -> None:
        try:
            self._connection.send(message)
        except OSError as exc:
            raise WorkerError(f"its process is gone: {self._stderr_tail()}") from exc

    def receive(self, timeout: float) -> dict[str, Any]:
        try:
            if not self._connection.poll(timeout):
                raise WorkerError(f"no answer within {timeout:g} s")
            message: dict[str, Any] = self._connection.recv()
        except (EOFError, OSError):
            self._process.join(5)
            raise WorkerError(
                f"its process exited ({self._process.exitcode}): {self._stderr_tail()}"
            ) from None
        if "error" in message:
            raise WorkerError(message["error"])
        return message

    def _stderr_tail(self) -> str:
        with open(self._stderr, errors="replace") as file:
            lines = [line.strip() for line in file.read().splitlines() if line.strip()]
        return " / ".join(lines[-3:]) or "nothing on stderr"

    def quit(self) -> None:
        """Ask the process to exit (it does when it next waits for a command)."""
        with contextlib.suppress(OSError):
            self._connection.send({"quit": True})
        self._connection.close()

    def join(self) -> None:
        """Wait for the process to exit (killing it after 10 s); remove its stderr file."""
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        with contextlib.suppress(OSError):
            os.unlink(self._stderr)


def _close(workers: dict[str, _Worker]) -> None:
    for worker in workers.values():
        worker.quit()
    for worker in workers.values():
        worker.join()


@dataclass(slots=True)
class Line:
    """One breaker in one round: what the downstream counted and the worker saw."""

    breaker: str
    store: str
    kind: str
    offered: int  # calls offered over the whole timeline
    offered_in_outage: int  # calls due during the outage
    healthy_share: float  # arrivals before the outage / calls offered before it
    reached: int  # calls the downstream counted over the whole timeline
    reached_in_outage: int  # of those, the ones that arrived during the outage (503)
    ok: int
    failed: int
    rejected: int
    not_started: int  # calls still waiting for their turn when the timeline ended
    stopped_after: float | None  # seconds from outage start to the first rejection
    recovered_after: float | None  # seconds from outage end to traffic >= 90 % again
    first_ok_after: float | None  # seconds from outage end to the first success
    late_p99_ms: float
    late_max_ms: float
    worker_reached: int  # ok + failed: what the worker says reached the downstream
    arrivals: list[int]  # per bucket from the start, counted by the downstream
    offered_per_bucket: list[int]  # per bucket from the start, as scheduled
    started: list[int]  # per bucket from the start, as the calls really started

    @property
    def share_in_outage(self) -> float:
        return self.reached_in_outage / self.offered_in_outage if self.offered_in_outage else 0


@dataclass(slots=True)
class Round:
    """One run of the timeline: every breaker's line, or why it has none."""

    number: int
    start: float  # wall time of the timeline's start
    outage: tuple[float, float]  # wall-clock window, as the downstream applied it
    lines: dict[str, Line] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    dynamodb_requests: dict[str, int] = field(default_factory=dict)  # Powertools' traffic


def _line(
    breaker: str,
    ready: dict[str, Any],
    records: list[list[Any]],
    stats: dict[str, Any],
    start: float,
    outage: tuple[float, float],
    duration: float,
) -> Line:
    slug = _slug(breaker)
    origin = round(start / BUCKET)
    buckets = math.ceil(duration / BUCKET)

    def bucket(wall: float) -> int:
        return min(buckets - 1, max(0, int(wall / BUCKET) - origin))

    arrivals = [0] * buckets
    for key, count in stats["buckets"].get(slug, {}).items():
        if 0 <= int(key) - origin < buckets:
            arrivals[int(key) - origin] += count
    offered, started = [0] * buckets, [0] * buckets
    outcomes = {outcome.value: 0 for outcome in Outcome} | {NOT_STARTED: 0}
    offered_in_outage = 0
    first_rejection: float | None = None  # when the breaker first answered "rejected"
    first_ok: float | None = None  # when the first call after the recovery succeeded
    for index, (began_ms, outcome, _late, took_ms) in enumerate(records):
        due = start + (index + 0.5) / RATE  # the load is defined by the schedule
        offered[bucket(due)] += 1
        outcomes[outcome] += 1
        if outage[0] <= due < outage[1]:
            offered_in_outage += 1
        if outcome == NOT_STARTED:
            continue
        began, ended = start + began_ms / 1000, start + (began_ms + took_ms) / 1000
        started[bucket(began)] += 1
        if outcome == Outcome.REJECTED.value and ended >= outage[0]:
            first_rejection = ended if first_rejection is None else min(first_rejection, ended)
        if outcome == Outcome.OK.value and began >= outage[1]:
            first_ok = ended if first_ok is None else min(first_ok, ended)
    healthy = math.floor((outage[0] - start) / BUCKET)
    healthy_share = sum(arrivals[:healthy]) / max(1, sum(offered[:healthy]))
    late = sorted(record[2] for record in records)
    return Line(
        breaker=breaker,
        store=ready["store"],
        kind=ready["kind"],
        offered=len(records),
        offered_in_outage=offered_in_outage,
        healthy_share=healthy_share,
        reached=stats["calls"].get(slug, 0),
        reached_in_outage=stats["failures"].get(slug, 0),
        ok=outcomes[Outcome.OK.value],
        failed=outcomes[Outcome.FAILED.value],
        rejected=outcomes[Outcome.REJECTED.value],
        not_started=outcomes[NOT_STARTED],
        stopped_after=None if first_rejection is None else first_rejection - outage[0],
        recovered_after=_recovered_after(
            arrivals, offered, outage[1] - start, RECOVERED_SHARE * min(1.0, healthy_share)
        ),
        first_ok_after=None if first_ok is None else first_ok - outage[1],
        late_p99_ms=late[min(len(late) - 1, math.ceil(0.99 * len(late)) - 1)] if late else 0,
        late_max_ms=late[-1] if late else 0,
        worker_reached=outcomes[Outcome.OK.value] + outcomes[Outcome.FAILED.value],
        arrivals=arrivals,
        offered_per_bucket=offered,
        started=started,
    )


def _recovered_after(
    arrivals: list[int], offered: list[int], end: float, share: float
) -> float | None:
    """Seconds from the outage's end (``end``, from the start) to the first bucket from
    which ``RECOVERED_BUCKETS`` buckets of arrivals reach ``share`` of the calls offered
    in them; ``None`` if that never happens before the timeline ends."""
    first = math.floor(end / BUCKET + 1e-9)
    for bucket in range(first, len(arrivals) - RECOVERED_BUCKETS + 1):
        window = slice(bucket, bucket + RECOVERED_BUCKETS)
        if sum(arrivals[window]) >= share * sum(offered[window]):
            return max(0.0, round(bucket * BUCKET - end, 3))
    return None


def _run_round(
    number: int,
    workers: dict[str, _Worker],
    unavailable: dict[str, str],
    downstream: Any,
    moto: _moto.CountingMotoServer | None,
    mode: Mode,
    delay_ms: int,
    progress: _report.Progress,
) -> Round:
    """One timeline: prepare every worker, start them together, set the outage, collect."""
    downstream.reset()
    plan = {
        "circuit": f"outage-{number}-{os.getpid()}",
        "downstream": downstream.url,
        "dynamodb_url": moto.url if moto else None,
        "table": TABLE_NAME,
        "rate": RATE,
        "tasks": TASKS,
        "delay_ms": delay_ms,
        "duration": mode.duration,
        "settings": asdict(SETTINGS),
    }
    running: dict[str, dict[str, Any]] = {}
    for breaker, worker in workers.items():
        if breaker in unavailable:
            continue
        try:
            worker.send({"prepare": plan})
        except WorkerError as exc:
            unavailable[breaker] = str(exc)
    for breaker, worker in workers.items():
        if breaker in unavailable:
            continue
        try:
            answer = worker.receive(timeout=120)
        except WorkerError as exc:
            unavailable[breaker] = str(exc)
            continue
        if "unavailable" in answer:
            unavailable[breaker] = answer["unavailable"]
        else:
            running[breaker] = answer["ready"]
    progress.advance(detail=f"round {number}: {len(running)} processes ready")

    # A whole second, far enough ahead for every worker to read it (see the docstring).
    start = float(math.ceil(time.time() + 0.5))
    for breaker in list(running):
        try:
            workers[breaker].send({"start": start})
        except WorkerError as exc:
            unavailable[breaker] = str(exc)
            del running[breaker]
    before = moto.snapshot() if moto else None
    outage = downstream.outage(OUTAGE, start_in=start + HEALTHY - time.time())
    result = Round(number, start, outage)
    for second in range(1, math.ceil(mode.duration) + 1):
        time.sleep(max(0.0, start + min(second, mode.duration) - time.time()))
        phase = "outage" if outage[0] <= time.time() < outage[1] else "healthy"
        progress.advance(detail=f"round {number}: {second} s, downstream {phase}")

    answers: dict[str, list[list[Any]]] = {}
    for breaker in list(running):
        try:
            answers[breaker] = workers[breaker].receive(timeout=60)["result"]["calls"]
        except WorkerError as exc:
            unavailable[breaker] = str(exc)
            del running[breaker]
    time.sleep(0.2)  # let the last calls' arrivals land in the counts
    stats = downstream.stats()
    if moto is not None and before is not None:
        result.dynamodb_requests = dict(moto.snapshot() - before)
    for breaker, ready in running.items():
        result.lines[breaker] = _line(
            breaker, ready, answers[breaker], stats, start, outage, mode.duration
        )
    result.unavailable = {b: unavailable[b] for b in LINES if b in unavailable}
    return result


# -- summary over rounds ---------------------------------------------------------------


@dataclass(slots=True)
class Summary:
    """One breaker over every round: medians, and the mean curve for the chart."""

    breaker: str
    store: str
    rounds: int
    healthy_share: float
    offered_in_outage: float
    reached_in_outage: float
    share_in_outage: float
    stopped_after: float | None
    recovered_after: float | None
    never_recovered: int  # rounds whose tail ended before traffic was back
    first_ok_after: float | None
    ok: float
    failed: float
    rejected: float
    not_started: float
    late_p99_ms: float
    mismatches: int  # rounds where the worker and the downstream disagreed on the count
    calls_per_second: list[float]  # median over rounds, per bucket
    offered_per_second: list[float]


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _summarise(breaker: str, rounds: list[Round]) -> Summary | None:
    lines = [r.lines[breaker] for r in rounds if breaker in r.lines]
    if not lines:
        return None

    def median(attribute: str) -> float:
        return float(statistics.median(getattr(line, attribute) for line in lines))

    def per_second(attribute: str) -> list[float]:
        columns = zip(*(getattr(line, attribute) for line in lines), strict=True)
        # The median, not the mean: a stall of this shared machine in one round (every
        # process late at once) would otherwise leave a dent in every curve.
        return [statistics.median(column) / BUCKET for column in columns]

    return Summary(
        breaker=breaker,
        store=lines[0].store,
        rounds=len(lines),
        healthy_share=median("healthy_share"),
        offered_in_outage=median("offered_in_outage"),
        reached_in_outage=median("reached_in_outage"),
        share_in_outage=median("share_in_outage"),
        stopped_after=_median([line.stopped_after for line in lines]),
        recovered_after=_median([line.recovered_after for line in lines]),
        never_recovered=sum(line.recovered_after is None for line in lines),
        first_ok_after=_median([line.first_ok_after for line in lines]),
        ok=median("ok"),
        failed=median("failed"),
        rejected=median("rejected"),
        not_started=median("not_started"),
        late_p99_ms=median("late_p99_ms"),
        mismatches=sum(line.worker_reached != line.reached for line in lines),
        calls_per_second=per_second("arrivals"),
        offered_per_second=per_second("offered_per_bucket"),
    )


def _count(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _percent(share: float) -> str:
    return f"{share * 100:.1f} %" if share >= 0.001 or share == 0 else f"{share * 100:.2f} %"


def _stopped(summary: Summary) -> str:
    if summary.stopped_after is None:
        return "never"
    return f"{summary.stopped_after * 1000:.0f} ms"


def _recovered(summary: Summary, tail: float) -> str:
    if summary.recovered_after is None:
        return f"not in {tail:g} s"
    text = f"{summary.recovered_after:.1f} s"
    return text + ("*" if summary.never_recovered else "")


def _table(summaries: dict[str, Summary | None], mode: Mode) -> str:
    headers = (
        "breaker",
        "store",
        "healthy",
        "reached in outage",
        "share",
        "stopped after",
        "back >=90% after",
        "failed",
        "rejected",
        "late p99",
    )
    rows: list[list[object]] = []
    for breaker in LINES:
        summary = summaries.get(breaker)
        if summary is None:
            rows.append([breaker, *[_report.NA] * (len(headers) - 1)])  # reason: below
            continue
        rows.append(
            [
                breaker,
                summary.store,
                _percent(summary.healthy_share),
                f"{_count(summary.reached_in_outage)} / {_count(summary.offered_in_outage)}",
                _percent(summary.share_in_outage),
                _stopped(summary),
                _recovered(summary, mode.tail),
                _count(summary.failed),
                _count(summary.rejected),
                f"{summary.late_p99_ms:.0f} ms",
            ]
        )
    return _report.table(headers, rows)


def _legend(mode: Mode, delay_ms: int) -> str:
    rounds = "one round" if mode.rounds == 1 else f"medians of {mode.rounds} rounds"
    return (
        f"{rounds}; {RATE} calls/s offered per breaker, downstream answering in {delay_ms} ms.\n"
        "healthy: calls reaching the downstream before the outage / offered then.\n"
        f"reached in outage: calls the downstream got during the {OUTAGE:g} s outage / calls "
        "due in it.\nstopped after: outage start to the breaker's first rejection.\n"
        f"back >=90% after: outage end to the first {RECOVERED_BUCKETS * BUCKET:g} s of "
        f"arrivals >= {RECOVERED_SHARE:.0%} of offered (0.1 s steps).\n"
        "failed/rejected: every call offered, as the breaker's process saw it.\n"
        "late p99: how late calls started against the schedule."
    )


def _headlines(
    summaries: dict[str, Summary | None], reasons: dict[str, str]
) -> list[_report.Headline]:
    headlines: list[_report.Headline] = []
    ours = summaries.get("aiocircuit")
    what = "outage: aiocircuit, share of the outage's calls that reached the downstream"
    recovered = "outage: aiocircuit, from recovery to traffic back at >= 90 % of offered"
    if ours is None:
        reason = reasons.get("aiocircuit", "did not run")
        headlines += [
            _report.Headline(what, _report.NA + ": " + reason),
            _report.Headline(recovered, _report.NA + ": " + reason),
        ]
    else:
        headlines += [
            _report.Headline(
                what,
                f"{_percent(ours.share_in_outage)} ({_count(ours.reached_in_outage)} of "
                f"{_count(ours.offered_in_outage)}); stopped {_stopped(ours)} into it",
            ),
            _report.Headline(
                recovered,
                "not within the tail"
                if ours.recovered_after is None
                else f"{ours.recovered_after:.1f} s (recovery_timeout "
                f"{SETTINGS.recovery_timeout} s)",
            ),
        ]
    for peer in _report.PEERS:
        summary = summaries.get(peer)
        title = f"outage: {peer}, share reaching the downstream / back >= 90 % after"
        if summary is None:
            value = _report.NA + ": " + reasons.get(peer, "did not run")
        else:
            back = (
                "never" if summary.recovered_after is None else f"{summary.recovered_after:.1f} s"
            )
            value = f"{_percent(summary.share_in_outage)} / {back}"
        headlines.append(_report.Headline(title, value))
    return headlines


# -- chart -------------------------------------------------------------------------------


def _chart(
    summaries: dict[str, Summary | None], rounds: list[Round], mode: Mode, delay_ms: int
) -> Path:
    """Small multiples, one row per breaker on a shared time axis: the curves of
    breakers that behave alike lie on top of one another on a single axes, and the
    reader could not tell which line is whose."""
    plt = _report.pyplot()
    present = [s for b in LINES if (s := summaries.get(b)) is not None]
    figure, rows = plt.subplots(
        len(present), 1, figsize=(9, 1.0 + 0.95 * len(present)), sharex=True, squeeze=False
    )
    outage = (rounds[0].outage[0] - rounds[0].start, rounds[0].outage[1] - rounds[0].start)
    times = [i * BUCKET for i in range(math.ceil(mode.duration / BUCKET) + 1)]
    for row, summary in zip(rows[:, 0], present, strict=True):
        colour = _report.colour(summary.breaker)
        curve = [*summary.calls_per_second, summary.calls_per_second[-1]]
        row.axvspan(*outage, color="#d62728", alpha=0.08, lw=0)
        row.axhline(RATE, color="#444444", ls=(0, (4, 3)), lw=0.8)
        row.fill_between(times, curve, step="post", color=colour, alpha=0.25, lw=0)
        row.step(times, curve, where="post", color=colour, lw=1.3)
        row.set_ylim(0, RATE * 1.3)
        row.set_yticks([0, RATE])
        row.tick_params(axis="both", length=2, labelsize=8)
        for side in ("top", "right"):
            row.spines[side].set_visible(False)
        label = summary.breaker + (" (baseline)" if summary.breaker == NO_BREAKER else "")
        row.text(
            0.0,
            1.0,
            label,
            transform=row.transAxes,
            ha="left",
            va="bottom",
            fontweight="bold",
            color=colour,
            fontsize=9,
        )
        row.text(
            sum(outage) / 2,
            RATE * 0.55,
            _annotation(summary),
            ha="center",
            va="center",
            fontsize=8,
            color="#222222",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1.5},
        )
    top = rows[0, 0]
    top.text(
        sum(outage) / 2,
        1.0,
        f"downstream failing ({OUTAGE:g} s)",
        transform=top.get_xaxis_transform(),  # x in seconds, y on the axes' top edge
        ha="center",
        va="bottom",
        color="#a02020",
        fontsize=8,
    )
    bottom = rows[-1, 0]
    bottom.set_xlim(0, mode.duration)
    bottom.set_xlabel("seconds from start")
    figure.supylabel("calls/s reaching the downstream (per 100 ms)", fontsize=9)
    runs = "one run" if len(rounds) == 1 else f"median of {len(rounds)} runs per 100 ms"
    figure.suptitle(
        f"Calls reaching a downstream that fails for {OUTAGE:g} s, per circuit breaker\n"
        f"{RATE} calls/s offered to each (dashed line); the downstream answers in "
        f"{delay_ms} ms\nfailure_threshold {SETTINGS.failure_threshold}, recovery_timeout "
        f"{SETTINGS.recovery_timeout} s, success_threshold {SETTINGS.success_threshold}; "
        f"{runs}",
        fontsize=9.5,
    )
    return _report.save_chart(figure, SCENARIO)


def _annotation(summary: Summary) -> str:
    """The numbers a row of the chart shows in its outage window."""
    reached = (
        f"{_count(summary.reached_in_outage)} of {_count(summary.offered_in_outage)} calls "
        f"reached it ({_percent(summary.share_in_outage)})"
    )
    if summary.breaker == NO_BREAKER:
        return reached
    back = (
        "traffic not back in time"
        if summary.recovered_after is None
        else f"back {summary.recovered_after:.1f} s after recovery"
    )
    text = f"{reached}; {back}"
    if summary.healthy_share < RECOVERED_SHARE:
        text += f"\ncarried {_percent(summary.healthy_share)} of the offered calls while healthy"
    return text


# -- JSON and main ---------------------------------------------------------------------


def _payload(
    mode: Mode,
    rounds: list[Round],
    summaries: dict[str, Summary | None],
    reasons: dict[str, str],
    delay_ms: int,
    elapsed: float,
) -> dict[str, Any]:
    def summary_json(breaker: str) -> dict[str, Any]:
        summary = summaries.get(breaker)
        if summary is None:
            return _report.na(reasons.get(breaker, "did not run"))
        document = asdict(summary)
        document["calls_per_second"] = [round(v, 1) for v in summary.calls_per_second]
        document["offered_per_second"] = [round(v, 1) for v in summary.offered_per_second]
        return document

    return {
        "mode": mode.name,
        "elapsed_seconds": round(elapsed, 1),
        "settings": asdict(SETTINGS),
        "load": {"calls_per_second": RATE, "tasks": TASKS, "schedule": "open loop"},
        "downstream_delay_ms": delay_ms,
        "timeline": {"healthy": HEALTHY, "outage": OUTAGE, "tail": mode.tail},
        "bucket_seconds": BUCKET,
        "recovered_when": f">= {RECOVERED_SHARE:.0%} of offered over {RECOVERED_BUCKETS} buckets",
        "verdict_basis": "median over rounds; counts of arrivals from the downstream",
        "breakers": {breaker: summary_json(breaker) for breaker in LINES},
        "rounds": [
            {
                "round": r.number,
                "start": r.start,
                "outage": list(r.outage),
                "unavailable": r.unavailable,
                "powertools_dynamodb_requests": r.dynamodb_requests,
                "lines": {b: asdict(line) for b, line in r.lines.items()},
            }
            for r in rounds
        ],
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks outage",
        description="Calls per second reaching a downstream that fails for 5 s, per "
        "breaker, each breaker in its own process on one shared timeline.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"one {QUICK.duration:g} s timeline instead of "
        f"{DEFAULT.rounds} of {DEFAULT.duration:g} s",
    )
    parser.add_argument(
        "--delay-ms",
        type=int,
        default=DELAY_MS,
        help=f"how long the downstream takes to answer each call (default {DELAY_MS})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the timeline(s), print the table, write the JSON and the chart. Always 0."""
    args = _parse_args(argv)
    from ._downstream import Downstream

    mode = QUICK if args.quick else DEFAULT
    print(
        f"outage behaviour: {mode.name} mode, {mode.rounds} x ({HEALTHY:g} s healthy, "
        f"{OUTAGE:g} s outage, {mode.tail:g} s after); {RATE} calls/s per breaker over "
        f"{TASKS} tasks; failure_threshold {SETTINGS.failure_threshold}, recovery_timeout "
        f"{SETTINGS.recovery_timeout} s, success_threshold {SETTINGS.success_threshold}",
        flush=True,
    )
    started = time.perf_counter()
    reasons: dict[str, str] = {}
    rounds: list[Round] = []
    steps = 1 + mode.rounds * (1 + math.ceil(mode.duration))
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(_report.Progress("outage", steps))
        workers: dict[str, _Worker] = {}
        stack.callback(_close, workers)
        for breaker in LINES:
            workers[breaker] = _Worker(breaker)
        downstream = stack.enter_context(Downstream())
        moto: _moto.CountingMotoServer | None = None
        missing = _moto.missing_requirements()
        if missing:
            reasons[POWERTOOLS] = f"needs {', '.join(missing)} ({_moto.INSTALL_HINT})"
        else:
            moto = stack.enter_context(_moto.CountingMotoServer())
            from aiocircuit.persistence.dynamodb import DynamoDBPersistence

            create = DynamoDBPersistence.create_table
            anyio.run(functools.partial(create, TABLE_NAME, endpoint_url=moto.url))
        for breaker, worker in workers.items():
            try:
                worker.receive(timeout=60)  # "hello": imported, clients open
            except WorkerError as exc:
                reasons[breaker] = str(exc)
        progress.advance(detail=f"{len(LINES)} processes started")
        for number in range(1, mode.rounds + 1):
            rounds.append(
                _run_round(
                    number, workers, reasons, downstream, moto, mode, args.delay_ms, progress
                )
            )
    elapsed = time.perf_counter() - started

    summaries = {breaker: _summarise(breaker, rounds) for breaker in LINES}
    print()
    print(_table(summaries, mode))
    print()
    print(_legend(mode, args.delay_ms))
    for breaker in LINES:
        summary = summaries.get(breaker)
        if summary is None:
            print(f"{breaker}: n/a: {reasons.get(breaker, 'did not run')}")
            continue
        if breaker in reasons:
            print(f"note: {breaker} stopped after {summary.rounds} round(s): {reasons[breaker]}")
        if summary.healthy_share < RECOVERED_SHARE:
            print(
                f"note: {breaker} carried {_percent(summary.healthy_share)} of the offered "
                "calls even while healthy; its 'back' is against that rate"
                + (" (pybreaker holds one lock across each call)" if breaker == "pybreaker" else "")
            )
        if summary.not_started:
            print(
                f"note: {breaker}: {_count(summary.not_started)} calls were still waiting "
                "for their turn when the timeline ended, and were not made"
            )
        if summary.mismatches:
            print(
                f"note: {breaker}: in {summary.mismatches} round(s) the downstream counted a "
                "different number of calls than the breaker's process says it made"
            )
        if summary.never_recovered:
            print(
                f"note: {breaker}: traffic was not back within the tail in "
                f"{summary.never_recovered} of {summary.rounds} rounds (* in the table)"
            )
    headlines = _headlines(summaries, reasons)
    print()
    for headline in headlines:
        print(f"{headline.what}: {headline.value}")
    path = _report.write_json(
        SCENARIO, _payload(mode, rounds, summaries, reasons, args.delay_ms, elapsed), headlines
    )
    print(f"\nresults written to {path}")
    unavailable = _report.charts_unavailable()
    if unavailable:
        print(f"chart not drawn: {unavailable}")
    elif not any(summaries.values()):
        print("chart not drawn: no breaker ran")
    else:
        print(f"chart written to {_chart(summaries, rounds, mode, args.delay_ms)}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
