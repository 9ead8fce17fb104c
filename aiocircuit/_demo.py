"""``aiocircuit demo``: watch a breaker protect a flaky downstream, live.

This is a demonstration, not a test. It runs in real time, with real concurrency and the
real :class:`~aiocircuit.CircuitBreaker` on an in-memory store: hundreds of tasks call a
simulated downstream that fails for a while and then recovers. Each transition is
printed as the breaker makes it, and a summary shows what the breaker did: during the
outage calls are rejected in microseconds instead of piling onto a failing downstream,
exactly one probe runs per recovery attempt, and the circuit closes once the downstream
is back.

:func:`run_simulation` is the programmatic entry point (the tests run it with small
parameters and assert on the :class:`DemoSummary` it returns); :func:`run_demo` is what
the command line calls.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from ._breaker import CircuitBreaker
from ._circuit import CircuitState, CircuitTransition
from ._config import CircuitBreakerConfig
from ._errors import CircuitBreakerOpenError
from .persistence import InMemoryPersistence

Report = Callable[[str], object]

CIRCUIT_NAME = "demo-downstream"

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN

# What each transition means in this demo, printed next to it.
_MEANING = {
    (_CLOSED, _OPEN): "tripped: calls are rejected from now on",
    (_OPEN, _HALF_OPEN): "recovery timeout over: one probe admitted",
    (_HALF_OPEN, _OPEN): "probe failed: open again",
    (_HALF_OPEN, _CLOSED): "probe succeeded: closed, calls flow again",
}


class DownstreamUnavailable(Exception):
    """What the simulated downstream raises during its outage."""


@dataclass(frozen=True)
class Scenario:
    """The parameters of one simulation. Invalid values raise ``ValueError`` naming the
    field.

    Attributes:
        tasks: concurrent worker tasks, each calling the downstream in a loop.
        duration: seconds the load lasts.
        outage_start: second (from the start) at which the downstream starts failing.
        outage_end: second at which it recovers.
        recovery_timeout: the breaker's ``recovery_timeout``.
        local_cache_max_age: the breaker's ``local_cache_max_age``.
        failure_threshold: the breaker's ``failure_threshold``.
        success_threshold: the breaker's ``success_threshold``; with 1, every recovery
            attempt is exactly one probe call.
        downstream_latency: seconds each downstream call takes.
        max_pause: each worker sleeps a random 0 to ``max_pause`` seconds between calls
            (so the load is not in lockstep).
        seed: seeds the pauses.
    """

    tasks: int = 300
    duration: float = 6.0
    outage_start: float = 1.0
    outage_end: float = 3.0
    recovery_timeout: float = 1.0
    local_cache_max_age: float = 0.2
    failure_threshold: int = 5
    success_threshold: int = 1
    downstream_latency: float = 0.005
    max_pause: float = 0.03
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tasks < 1:
            raise ValueError(f"tasks: must be >= 1, got {self.tasks}")
        if not 0 <= self.outage_start < self.outage_end <= self.duration:
            raise ValueError(
                "outage_start, outage_end: need 0 <= outage_start < outage_end <= duration, "
                f"got {self.outage_start}, {self.outage_end} (duration {self.duration})"
            )
        if self.downstream_latency < 0 or self.max_pause < 0:
            raise ValueError("downstream_latency, max_pause: must be >= 0")

    @classmethod
    def lasting(cls, seconds: float, *, tasks: int = 300) -> Scenario:
        """The command line's scenario: ``seconds`` of load, the downstream down from a
        sixth to half of it, which leaves the breaker time to close again afterwards."""
        return cls(tasks=tasks, duration=seconds, outage_start=seconds / 6, outage_end=seconds / 2)

    def breaker_config(self) -> CircuitBreakerConfig:
        """The breaker configuration this scenario runs with."""
        return CircuitBreakerConfig(
            failure_threshold=self.failure_threshold,
            success_threshold=self.success_threshold,
            recovery_timeout=self.recovery_timeout,
            local_cache_max_age=self.local_cache_max_age,
        )


@dataclass(frozen=True)
class TimedTransition:
    """A transition of the demo's circuit, ``at`` seconds after the load started."""

    at: float
    from_state: CircuitState
    to_state: CircuitState


@dataclass(frozen=True)
class DemoSummary:
    """What happened in one simulation.

    ``admitted`` calls reached the downstream (``succeeded + failed``); ``rejected``
    calls raised :class:`~aiocircuit.CircuitBreakerOpenError` without reaching it.
    ``probes`` are admitted calls that ran while the breaker was not closed.
    """

    scenario: Scenario
    calls: int
    admitted: int
    rejected: int
    succeeded: int
    failed: int
    probes: int
    max_probes_in_flight: int
    transitions: tuple[TimedTransition, ...]
    final_state: CircuitState
    mean_rejected_seconds: float
    mean_admitted_seconds: float

    @property
    def trips(self) -> int:
        """How many times the circuit opened from CLOSED."""
        return self._count(_CLOSED, _OPEN)

    @property
    def recovery_attempts(self) -> int:
        """How many times a probe lease was taken (OPEN -> HALF_OPEN)."""
        return self._count(_OPEN, _HALF_OPEN)

    @property
    def time_to_recover(self) -> float | None:
        """Seconds from the first trip to the final close; ``None`` if the circuit never
        tripped or did not end closed."""
        trips = [t.at for t in self.transitions if (t.from_state, t.to_state) == (_CLOSED, _OPEN)]
        last = self.transitions[-1] if self.transitions else None
        if not trips or last is None or last.to_state is not _CLOSED:
            return None
        return last.at - trips[0]

    def _count(self, from_state: CircuitState, to_state: CircuitState) -> int:
        return sum(
            1 for t in self.transitions if (t.from_state, t.to_state) == (from_state, to_state)
        )


class _Tally:
    """The simulation's running counts. Tasks share one thread, so no lock."""

    __slots__ = (
        "admitted_seconds",
        "failed",
        "max_probes_in_flight",
        "probes",
        "probes_in_flight",
        "rejected",
        "rejected_seconds",
        "succeeded",
    )

    def __init__(self) -> None:
        self.succeeded = 0
        self.failed = 0
        self.rejected = 0
        self.probes = 0
        self.probes_in_flight = 0
        self.max_probes_in_flight = 0
        self.admitted_seconds = 0.0
        self.rejected_seconds = 0.0


def _line(at: float, text: str) -> str:
    return f"  {at:7.3f} s  {text}"


def format_transition(transition: TimedTransition) -> str:
    """One timeline line for ``transition``."""
    arrow = f"{transition.from_state.value:<9} -> {transition.to_state.value:<9}"
    meaning = _MEANING.get((transition.from_state, transition.to_state), "")
    return _line(transition.at, f"{arrow}  {meaning}".rstrip())


async def run_simulation(scenario: Scenario, report: Report = print) -> DemoSummary:
    """Run ``scenario`` in the current event loop (asyncio or trio) and return what
    happened. Timeline lines (outage start and end, each transition) go to ``report`` as
    they happen."""
    tally = _Tally()
    timeline: list[TimedTransition] = []
    rng = random.Random(scenario.seed)
    start = anyio.current_time()
    deadline = start + scenario.duration

    def on_transition(transition: CircuitTransition) -> None:
        timed = TimedTransition(
            anyio.current_time() - start, transition.from_state, transition.to_state
        )
        timeline.append(timed)
        report(format_transition(timed))

    outage_seen = False

    async def downstream() -> str:
        # The flaky service: its health depends only on the time since the start.
        nonlocal outage_seen
        await anyio.sleep(scenario.downstream_latency)
        elapsed = anyio.current_time() - start
        if scenario.outage_start <= elapsed < scenario.outage_end:
            if not outage_seen:
                # Announced by the first failing call rather than by a timer, so that it
                # always precedes the trip it causes in the timeline.
                outage_seen = True
                report(_line(elapsed, "downstream starts failing"))
            raise DownstreamUnavailable(f"downstream unavailable at {elapsed:.3f} s")
        return "ok"

    async with InMemoryPersistence() as store:
        breaker = CircuitBreaker(
            CIRCUIT_NAME,
            store,
            config=scenario.breaker_config(),
            on_transition=on_transition,
        )

        async def observed_downstream() -> str:
            # Runs only once the breaker has admitted the call. The breaker's state at
            # that moment tells an ordinary call (CLOSED) from a probe (anything else);
            # the in-flight count checks that probes never overlap.
            probing = breaker.state is not _CLOSED
            if probing:
                tally.probes += 1
                tally.probes_in_flight += 1
                tally.max_probes_in_flight = max(tally.max_probes_in_flight, tally.probes_in_flight)
            try:
                return await downstream()
            finally:
                if probing:
                    tally.probes_in_flight -= 1

        async def worker() -> None:
            await anyio.sleep(rng.uniform(0, scenario.max_pause))  # no thundering start
            while anyio.current_time() < deadline:
                began = time.perf_counter()
                try:
                    await breaker.call(observed_downstream)
                except CircuitBreakerOpenError:
                    tally.rejected += 1
                    tally.rejected_seconds += time.perf_counter() - began
                except DownstreamUnavailable:
                    tally.failed += 1
                    tally.admitted_seconds += time.perf_counter() - began
                else:
                    tally.succeeded += 1
                    tally.admitted_seconds += time.perf_counter() - began
                await anyio.sleep(rng.uniform(0, scenario.max_pause))

        async def announce_recovery() -> None:
            # A timer, not the downstream: while the circuit is open nothing calls it.
            await anyio.sleep_until(start + scenario.outage_end)
            report(_line(anyio.current_time() - start, "downstream recovers"))

        async with anyio.create_task_group() as tg:
            # The outage always ends within the load (Scenario checks), so the announcer
            # finishes before the workers do.
            tg.start_soon(announce_recovery)
            for _ in range(scenario.tasks):
                tg.start_soon(worker)
        report(_line(anyio.current_time() - start, "load ends"))
        final_state = breaker.state

    admitted = tally.succeeded + tally.failed
    return DemoSummary(
        scenario=scenario,
        calls=admitted + tally.rejected,
        admitted=admitted,
        rejected=tally.rejected,
        succeeded=tally.succeeded,
        failed=tally.failed,
        probes=tally.probes,
        max_probes_in_flight=tally.max_probes_in_flight,
        transitions=tuple(timeline),
        final_state=final_state,
        mean_rejected_seconds=tally.rejected_seconds / tally.rejected if tally.rejected else 0.0,
        mean_admitted_seconds=tally.admitted_seconds / admitted if admitted else 0.0,
    )


def format_header(scenario: Scenario, backend: str) -> list[str]:
    """The lines that introduce a run of ``scenario``."""
    s = scenario
    return [
        f"aiocircuit demo: {s.tasks} tasks call a flaky downstream for {s.duration:g} s "
        f"({backend}, in-memory store)",
        f"  downstream  {s.downstream_latency * 1000:g} ms per call; fails from "
        f"{s.outage_start:.3f} s to {s.outage_end:.3f} s",
        f"  breaker     failure_threshold={s.failure_threshold}, "
        f"success_threshold={s.success_threshold}, recovery_timeout={s.recovery_timeout:g} s, "
        f"local_cache_max_age={s.local_cache_max_age:g} s",
        "",
        "timeline",
        _line(0.0, "load starts"),
    ]


def format_summary(summary: DemoSummary) -> list[str]:
    """The summary block printed at the end of a run."""
    s = summary
    recovery = s.time_to_recover
    if recovery is not None:
        first_trip = next(t.at for t in s.transitions if t.to_state is _OPEN)
        recovered = (
            f"{recovery:.3f} s  from the first trip ({first_trip:.3f} s) "
            f"to the final close ({s.transitions[-1].at:.3f} s)"
        )
    elif s.trips:
        recovered = "-        did not close again before the load ended"
    else:
        recovered = "-        never tripped"
    attempts = s.recovery_attempts
    rows = [
        ("calls", f"{s.calls:,}", ""),
        ("admitted", f"{s.admitted:,}", f"{s.succeeded:,} succeeded, {s.failed:,} failed"),
        (
            "rejected",
            f"{s.rejected:,}",
            f"in {s.mean_rejected_seconds * 1e6:.0f} us on average; an admitted call took "
            f"{s.mean_admitted_seconds * 1e3:.1f} ms",
        ),
        ("failed", f"{s.failed:,}", ""),
        (
            "probes",
            f"{s.probes:,}",
            f"{attempts} recovery attempt{'' if attempts == 1 else 's'}, "
            f"at most {s.max_probes_in_flight} probe in flight",
        ),
    ]
    width = max(len(value) for _, value, _ in rows)
    lines = ["", "summary"]
    lines += [f"  {label:<17} {value:>{width}}  {note}".rstrip() for label, value, note in rows]
    lines.append(f"  {'time to recover':<17} {recovered}")
    lines.append(f"  {'final state':<17} {s.final_state.value}")
    return lines


def run_demo(
    scenario: Scenario, *, backend: str = "asyncio", report: Report | None = None
) -> DemoSummary:
    """Print the header, run ``scenario`` on ``backend`` and print the summary."""
    if report is None:
        # Flushed per line, so the timeline appears as it happens even through a pipe.
        report = functools.partial(print, flush=True)
    for line in format_header(scenario, backend):
        report(line)
    summary = anyio.run(run_simulation, scenario, report, backend=backend)
    for line in format_summary(summary):
        report(line)
    return summary
