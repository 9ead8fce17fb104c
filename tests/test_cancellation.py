"""Cancellation injection: a call cancelled at any await point never wedges the circuit.

Every scenario below is a short sequence of calls on a FakeClock (failure_threshold=1,
recovery_timeout=30, local_cache_max_age=5; success_threshold 1, or 2 where named). One
step of it is the *victim*. A recording run lists the victim's await points: each store
operation's ``<op>:before`` (request in flight) and ``<op>:after`` (applied, answer in
transit), ``hook:<FROM>-><TO>`` inside an async ``on_transition``, ``on_circuit_open``
inside an async ``on_circuit_open``, and ``call`` in the downstream's body. The lists are
pinned below (EXPECTED_POINTS): a new await point in the library fails
``test_victim_passes_exactly_the_expected_points`` until it is listed, and so gets its
own cells. Then, for every point, the scenario runs again from scratch (fresh store,
breaker and clock) and the victim is cancelled exactly there, in each style:

* asyncio: ``Task.cancel()``; ``asyncio.timeout()`` and ``asyncio.wait_for()`` (3.11+ for
  the first), whose deadline is fired by jumping the running loop's clock, never by
  waiting; an ``asyncio.TaskGroup`` sibling that raises (3.11+); anyio
  ``CancelScope.cancel()``; and, for aiohttp, the session's ``ClientTimeout(total=...)``;
* trio: a native ``trio.CancelScope``, and anyio's;
* the sync shim (through its portal): a signal handler that raises in the main thread
  while it waits on the portal (or runs the call), either an ``Exception`` (a
  SIGALRM-style timeout) or a ``BaseException`` (KeyboardInterrupt-like).

After each aborted victim the suite asserts, against the store and the breaker's
behaviour only:

1. no lease outlives its holder: the stored record has no probe lease in the future;
2. the next probe comes within one recovery_timeout: at once if the circuit is CLOSED or
   the lease was given back, else after ``advance(recovery_timeout + 1)``, a healthy call
   reaches the downstream, and after success_threshold of them ``info()`` says CLOSED;
3. no healthy call counts as a failure: none is rejected once a probe is due, the circuit
   never goes back to OPEN and ``on_transition`` reports no new ->OPEN;
4. cancellation never counts as a failure: a victim cancelled before its call's own
   outcome trips or reopens nothing. (Two styles are timeouts the library counts by
   design when they land in the call itself: aiohttp's total timeout, and the signal's
   ``Exception``, which the call then raised; there a trip or reopen is the documented
   outcome.)

It also checks that each injection really fired at its point: the style's cancellation
reached the caller (CancelledError, TimeoutError, the group's sibling error, a caught
cancel scope, the signal's exception) and, for asyncio's edge-triggered styles and the
signals, the step did not complete normally; a cancellation injected in the call's body
is delivered there. (The signal's ``Exception`` inside ``on_transition`` is the one
injection that aborts nothing: hook exceptions are logged and swallowed, by design, so
there the step must run its natural course instead.)

Coverage: 47 await points over 7 victim steps (46 for ``async with`` and ``with``, which
have no on_circuit_open), each injected in every style its call form runs on:

====================================  ======  ======================  =====
call form                             points  styles (asyncio + trio)  cells
====================================  ======  ======================  =====
``@breaker``, ``call()``, httpx (x3)      47  5 + 2                      987
``async with``                            46  5 + 2                      322
aiohttp middleware                        47  6 + 0                      282
sync ``@breaker`` (portal, signals)       47  2                           94
sync ``with`` (portal, signals)           46  2                           92
====================================  ======  ======================  =====

1777 injected cells in all on Python 3.11+ (on 3.10, which lacks asyncio.timeout and
TaskGroup: 1309), plus 77 enumeration checks. The whole module runs in well under 30 s.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import pytest

from aiocircuit import CircuitState, CircuitTransition
from aiocircuit.persistence import CircuitRecord

from .injection import (
    YIELDS,
    Injector,
    LoopClock,
    Result,
    Rig,
    SignalInjector,
    SignalInterrupt,
    SignalTimeout,
    SyncForm,
    Victim,
    open_form,
    run_async_victim,
    run_sync_victim,
)

RECOVERY = 30  # recovery_timeout of every scenario (tests.injection.Rig)

# -- scenarios ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """Steps before the victim (("call", behaviour, expected result) or ("advance",
    seconds)), the victim's downstream behaviour and how it ends uncancelled."""

    name: str
    success_threshold: int
    setup: tuple[tuple[str, str, str] | tuple[str, float], ...]
    victim: str
    natural: str
    fails: bool = False  # the victim's own call counts as a failure (trips or reopens)
    on_circuit_open: bool = False


TRIP = ("call", "fail", "failed")
RECOVERED = ("advance", RECOVERY)

SCENARIOS = {
    s.name: s
    for s in (
        # (a) a failing call on a closed circuit trips it
        Scenario("trip", 1, (), victim="fail", natural="failed", fails=True),
        # (b) the probe after recovery_timeout succeeds and closes the circuit
        Scenario("probe_success", 1, (TRIP, RECOVERED), victim="ok", natural="ok"),
        # (c) the probe fails and reopens it
        Scenario("probe_fails", 1, (TRIP, RECOVERED), victim="fail", natural="failed", fails=True),
        # (d) the probe raises an ignored exception and releases the lease
        Scenario("probe_ignored", 1, (TRIP, RECOVERED), victim="ignored", natural="ignored"),
        # an open circuit rejects through an async on_circuit_open (cache stale: a read)
        Scenario(
            "rejected",
            1,
            (TRIP, ("advance", 10)),
            victim="ok",
            natural="rejected",
            on_circuit_open=True,
        ),
        # success_threshold=2: the first probe succeeds, which writes nothing ...
        Scenario("probe1_of_2", 2, (TRIP, RECOVERED), victim="ok", natural="ok"),
        # ... and the second renews the lease as it starts, then closes the circuit
        Scenario(
            "probe2_of_2", 2, (TRIP, RECOVERED, ("call", "ok", "ok")), victim="ok", natural="ok"
        ),
    )
}

_READ = ("read:before", "read:after")
_ELECT = (*_READ, "acquire_probe:before", "acquire_probe:after", "hook:OPEN->HALF_OPEN")

# What the library passes through in each victim step, uncancelled, in order.
EXPECTED_POINTS: dict[str, tuple[str, ...]] = {
    "trip": (*_READ, "call", "trip:before", "trip:after", "hook:CLOSED->OPEN"),
    "probe_success": (*_ELECT, "call", "close:before", "close:after", "hook:HALF_OPEN->CLOSED"),
    "probe_fails": (*_ELECT, "call", "reopen:before", "reopen:after", "hook:HALF_OPEN->OPEN"),
    "probe_ignored": (*_ELECT, "call", "renew_probe:before", "renew_probe:after"),
    "rejected": (*_READ, "on_circuit_open"),
    "probe1_of_2": (*_ELECT, "call"),
    "probe2_of_2": (
        "renew_probe:before",
        "renew_probe:after",
        "call",
        "close:before",
        "close:after",
        "hook:HALF_OPEN->CLOSED",
    ),
}
# `async with` and `with` raise CircuitBreakerOpenError: they have no on_circuit_open.
EXPECTED_POINTS_BY_FORM: dict[tuple[str, str], tuple[str, ...]] = {
    ("rejected", "async_with"): _READ,
    ("rejected", "sync_with"): _READ,
}


def expected_points(scenario: str, form: str) -> tuple[str, ...]:
    return EXPECTED_POINTS_BY_FORM.get((scenario, form), EXPECTED_POINTS[scenario])


# -- forms, styles, cells ----------------------------------------------------------------

BREAKER_FORMS = ("decorator", "async_with", "call", "httpx")
SYNC_FORMS = ("sync_decorator", "sync_with")
HAS_311 = sys.version_info >= (3, 11)
ASYNCIO_STYLES = tuple(
    s
    for s in ("task_cancel", "asyncio_timeout", "wait_for", "taskgroup", "anyio_scope")
    if HAS_311 or s not in ("asyncio_timeout", "taskgroup")
)
TRIO_STYLES = ("trio_scope", "anyio_scope")
SCOPE_STYLES = ("trio_scope", "anyio_scope")  # level-triggered: may land after the step
SYNC_STYLES = {"signal_exception": SignalTimeout, "signal_interrupt": SignalInterrupt}
# Timeouts the library counts as the call's failure when they land in the call itself.
COUNTING_STYLES = ("client_timeout", "signal_exception")


def backends_and_styles(form: str) -> list[tuple[str, str]]:
    if form == "aiohttp":
        return [("asyncio", s) for s in (*ASYNCIO_STYLES, "client_timeout")]
    return [("asyncio", s) for s in ASYNCIO_STYLES] + [("trio", s) for s in TRIO_STYLES]


def _point_id(point: str) -> str:
    return point.replace("->", "-to-")


def async_cells() -> Iterable[object]:
    for form in (*BREAKER_FORMS, "aiohttp"):
        for scenario in SCENARIOS:
            for point in expected_points(scenario, form):
                for backend, style in backends_and_styles(form):
                    yield pytest.param(
                        scenario,
                        point,
                        form,
                        backend,
                        style,
                        id=f"{scenario}-{_point_id(point)}-{form}-{backend}-{style}",
                    )


def sync_cells() -> Iterable[object]:
    for form in SYNC_FORMS:
        for scenario in SCENARIOS:
            for point in expected_points(scenario, form):
                for style in SYNC_STYLES:
                    yield pytest.param(
                        scenario,
                        point,
                        form,
                        style,
                        id=f"{scenario}-{_point_id(point)}-{form}-{style}",
                    )


def enumeration_cases() -> Iterable[object]:
    for form in (*BREAKER_FORMS, "aiohttp"):
        backends = ("asyncio",) if form == "aiohttp" else ("asyncio", "trio")
        for scenario in SCENARIOS:
            for backend in backends:
                yield pytest.param(scenario, form, backend, id=f"{scenario}-{form}-{backend}")


# -- the invariants ----------------------------------------------------------------------


def _fmt(record: CircuitRecord | None, now: float) -> str:
    if record is None:
        return "no record (CLOSED)"
    text = record.state.value
    if record.opened_at is not None:
        text += f" opened_at=now{record.opened_at - now:+.0f}s"
    if record.probe_owner is not None:
        expiry = record.lease_expiry
        lease = "none" if expiry is None else f"now{expiry - now:+.0f}s"
        text += f" lease(owner=...{record.probe_owner[-6:]}, expiry={lease})"
    return text


def _is_open(record: CircuitRecord | None) -> bool:
    return record is not None and record.state is CircuitState.OPEN


class Checks:
    """Collects the violations of one cell, in words fit for a report."""

    def __init__(self, scenario: Scenario, form: str, target: str, style: str) -> None:
        self.scenario = scenario
        self.target = target
        self.style = style
        self.violations: list[str] = []
        points = expected_points(scenario.name, form)
        after_call = "call" in points and points.index(target) > points.index("call")
        counted_here = target == "call" and style in COUNTING_STYLES
        # May the aborted step trip or reopen the circuit? Only if its call's own
        # failure landed before the cancellation, or the style is a counted timeout that
        # landed in the call.
        self.open_allowed = (scenario.fails and after_call) or counted_here
        # An Exception raised in on_transition is logged and swallowed (documented), so
        # the signal's Exception there aborts nothing: the step runs its natural course.
        self.aborts = not (style == "signal_exception" and target.startswith("hook:"))

    def fail(self, message: str) -> None:
        self.violations.append(message)

    def injection(self, injector: Injector, victim: Victim) -> None:
        """The cancellation fired at the target and reached the caller."""
        if injector.fired_at != self.target:
            self.fail(f"the point {self.target!r} was never reached (passed: {injector.points})")
            return
        if getattr(injector, "late", False):
            self.fail("the signal handler did not run while the step waited at the point")
        if self.target == "call" and injector.delivered_at != "call":
            self.fail("a cancellation injected in the call's body was not delivered there")
        if not self.aborts:
            natural = victim.result is not None and victim.result.kind == self.scenario.natural
            if victim.surfaced or not natural:
                self.fail(f"the hook's exception was not swallowed as documented: {victim.detail}")
            return
        edge_triggered = self.style not in SCOPE_STYLES
        if not victim.surfaced or (edge_triggered and victim.finished):
            self.fail(f"the cancellation did not surface to the caller: {victim.detail}")

    def after_abort(
        self,
        before: CircuitRecord | None,
        after: CircuitRecord | None,
        now: float,
        transitions: list[tuple[str, CircuitTransition]],
        in_flight: int,
    ) -> None:
        if in_flight:
            self.fail(
                f"{in_flight} store operation(s) still in flight after the caller saw the "
                "cancellation"
            )
        if not self.aborts:
            return  # nothing was aborted: a lease or a reopen is the step's own outcome
        # 1. no lease outlives its holder
        holder = after.probe_owner if after is not None else None
        expiry = after.lease_expiry if after is not None else None
        if holder is not None and (expiry is None or expiry > now):
            self.fail(f"lease leaked: the aborted probe's lease is still held: {_fmt(after, now)}")
        # 4. cancellation never counts as a failure
        if not self.open_allowed:
            newly_open = _is_open(after) and (
                not _is_open(before) or before.opened_at != after.opened_at  # type: ignore[union-attr]
            )
            if newly_open:
                self.fail(
                    f"cancellation counted as a failure: the aborted step opened the circuit "
                    f"({_fmt(before, now)} -> {_fmt(after, now)})"
                )
            opened = [
                t
                for phase, t in transitions
                if phase == "victim" and t.to_state is CircuitState.OPEN
            ]
            if opened:
                self.fail(f"cancellation counted as a failure: on_transition reported {opened}")

    @staticmethod
    def probe_due_now(after: CircuitRecord | None, now: float) -> bool:
        if after is None or after.state is CircuitState.CLOSED:
            return True
        if after.state is CircuitState.HALF_OPEN:
            return after.lease_expiry is not None and after.lease_expiry <= now
        if after.state is CircuitState.OPEN and after.opened_at is not None:
            return after.opened_at + RECOVERY <= now
        return False

    def healthy_call(
        self,
        number: int,
        when: str,
        result: Result,
        reached: int,
        state: CircuitState,
        stored: CircuitRecord | None,
        now: float,
    ) -> bool:
        """2./3. one healthy call once a probe is due: it reaches the downstream and
        succeeds, and the circuit is not OPEN after it. False: stop here."""
        if result.kind != "ok" or reached != 1:
            what = "wedged: " if result.kind == "rejected" else ""
            self.fail(
                f"{what}healthy call {number} ({when}) was {result}, reached the downstream "
                f"{reached} time(s); breaker.state={state.value}, stored {_fmt(stored, now)}"
            )
            return False
        if _is_open(stored):
            self.fail(f"healthy call {number} ({when}) left the circuit OPEN: {_fmt(stored, now)}")
            return False
        return True

    def recovered(
        self,
        info_state: CircuitState,
        after: CircuitRecord | None,
        transitions: list[tuple[str, CircuitTransition]],
        completed: bool,
    ) -> None:
        if completed and info_state is not CircuitState.CLOSED:
            self.fail(
                f"not CLOSED after {self.scenario.success_threshold} healthy probe(s): "
                f"info().state={info_state.value}"
            )
        # 3. no new ->OPEN. The victim's own trip or reopen (it landed: the store shows
        # its opened_at) may still be delivered by the next caller, once: its dispatch
        # was cut short, or its hook was interrupted and is fired again. That is the
        # aborted step's transition, not a healthy call counted as a failure; a healthy
        # call's own reopen would carry a later opened_at (a probe comes only after the
        # clock has moved past the victim's).
        late = after.opened_at if _is_open(after) else None  # type: ignore[union-attr]
        for phase, t in transitions:
            if phase != "healthy" or t.to_state is not CircuitState.OPEN:
                continue
            if late is not None and t.opened_at == late:
                late = None  # once
                continue
            self.fail(f"a healthy call reopened the circuit: on_transition reported {t}")

    def verdict(self, injector: Injector) -> None:
        if self.violations:
            lines = "\n  - ".join(self.violations)
            pytest.fail(
                f"cancelled at {self.target!r} ({self.style}); fired at {injector.fired_at}, "
                f"delivered at {injector.delivered_at}; passed {injector.points}\n  - {lines}",
                pytrace=False,
            )


# -- the async runs -----------------------------------------------------------------------


async def _setup_async(scenario: Scenario, rig: Rig, call: object) -> None:
    for action in scenario.setup:
        if action[0] == "advance":
            rig.clock.advance(float(action[1]))
            continue
        assert len(action) == 3
        rig.behaviour = str(action[1])
        result = await call()  # type: ignore[operator]
        assert result.kind == action[2], f"setup step {action} ended {result}"


@pytest.mark.anyio
@pytest.mark.parametrize(("scenario", "form", "anyio_backend"), list(enumeration_cases()))
async def test_victim_passes_exactly_the_expected_points(
    scenario: str, form: str, anyio_backend: str
) -> None:
    """Uncancelled, each victim step passes exactly the await points pinned in
    EXPECTED_POINTS, in order, and ends as the scenario says."""
    spec = SCENARIOS[scenario]
    injector = Injector()
    rig = Rig(
        injector,
        success_threshold=spec.success_threshold,
        with_on_circuit_open=spec.on_circuit_open,
    )
    async with open_form(form, rig, None) as handle:
        await _setup_async(spec, rig, handle.call)
        rig.behaviour = spec.victim
        injector.armed = True
        result = await handle.call()
        injector.armed = False
    assert tuple(injector.points) == expected_points(scenario, form)
    assert result.kind == spec.natural


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("scenario", "point", "form", "anyio_backend", "style"), list(async_cells())
)
async def test_cancelled_at_point_circuit_stays_recoverable(
    scenario: str, point: str, form: str, anyio_backend: str, style: str
) -> None:
    """A victim cancelled at this await point, in this style, leaves no lease behind,
    counts as no failure, and the next probe comes within one recovery_timeout and
    closes the circuit."""
    spec = SCENARIOS[scenario]
    injector = Injector(point)
    rig = Rig(
        injector,
        success_threshold=spec.success_threshold,
        with_on_circuit_open=spec.on_circuit_open,
    )
    checks = Checks(spec, form, point, style)
    loop_clock = LoopClock()
    try:
        async with open_form(form, rig, style) as handle:
            await _setup_async(spec, rig, handle.call)
            before = await rig.stored(handle.circuit)
            rig.behaviour = spec.victim
            rig.phase = "victim"
            injector.armed = True
            victim = await run_async_victim(style, injector, handle.call, loop_clock)
            injector.armed = False
            rig.phase = "after"
            in_flight = rig.store.in_flight
            for _ in range(YIELDS):  # let a straggling store op land before judging
                if not rig.store.in_flight:
                    break
                await anyio.lowlevel.checkpoint()
            checks.injection(injector, victim)
            after = await rig.stored(handle.circuit)
            now = rig.clock.time()
            checks.after_abort(before, after, now, rig.transitions, in_flight)

            due_now = checks.probe_due_now(after, now)
            if not due_now:
                rig.clock.advance(RECOVERY + 1)
            when = "at once" if due_now else f"after advance({RECOVERY + 1})"
            rig.phase = "healthy"
            rig.behaviour = "ok"
            completed = True
            for number in range(1, spec.success_threshold + 1):
                calls = rig.downstream_calls
                result = await handle.call()
                stored = await rig.stored(handle.circuit)
                reached = rig.downstream_calls - calls
                state = handle.breaker.state
                if not checks.healthy_call(
                    number, when, result, reached, state, stored, rig.clock.time()
                ):
                    completed = False
                    break
            info = await handle.breaker.info()
            checks.recovered(info.state, after, rig.transitions, completed)
    finally:
        loop_clock.undo()
    checks.verdict(injector)


# -- the sync shim -----------------------------------------------------------------------


def _setup_sync(scenario: Scenario, rig: Rig, form: SyncForm) -> None:
    for action in scenario.setup:
        if action[0] == "advance":
            rig.clock.advance(float(action[1]))
            continue
        assert len(action) == 3
        rig.behaviour = str(action[1])
        result = form.call()
        assert result.kind == action[2], f"setup step {action} ended {result}"


@pytest.mark.parametrize("form", SYNC_FORMS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_sync_victim_passes_exactly_the_expected_points(scenario: str, form: str) -> None:
    """Through the sync shim's portal, uncancelled, each victim step passes exactly the
    await points pinned in EXPECTED_POINTS, in order, and ends as the scenario says."""
    spec = SCENARIOS[scenario]
    injector = SignalInjector(None, SignalInterrupt)
    rig = Rig(
        injector,
        success_threshold=spec.success_threshold,
        with_on_circuit_open=spec.on_circuit_open,
    )
    handle = SyncForm(rig, form)
    _setup_sync(spec, rig, handle)
    rig.behaviour = spec.victim
    injector.armed = True
    result = handle.call()
    injector.armed = False
    assert tuple(injector.points) == expected_points(scenario, form)
    assert result.kind == spec.natural


@pytest.mark.parametrize(("scenario", "point", "form", "style"), list(sync_cells()))
def test_signal_at_point_circuit_stays_recoverable(
    scenario: str, point: str, form: str, style: str
) -> None:
    """An exception thrown into the calling thread by a signal handler at this await
    point (while it waits on the shim's portal, or runs the call) leaves no lease
    behind, counts as no failure, and the next probe comes within one recovery_timeout
    and closes the circuit."""
    spec = SCENARIOS[scenario]
    injector = SignalInjector(point, SYNC_STYLES[style])
    rig = Rig(
        injector,
        success_threshold=spec.success_threshold,
        with_on_circuit_open=spec.on_circuit_open,
    )
    checks = Checks(spec, form, point, style)
    handle = SyncForm(rig, form)
    _setup_sync(spec, rig, handle)
    before = rig.stored_sync(handle.circuit)
    rig.behaviour = spec.victim
    rig.phase = "victim"
    injector.armed = True
    victim = run_sync_victim(injector, handle.call)
    injector.armed = False
    rig.phase = "after"
    # The portal goes on with an op the caller stopped waiting for: let it land (real
    # time, microseconds; bounded) before judging what it left behind.
    assert rig.store.wait_idle(1.0), "a store operation on the portal never finished"
    checks.injection(injector, victim)
    after = rig.stored_sync(handle.circuit)
    now = rig.clock.time()
    checks.after_abort(before, after, now, rig.transitions, 0)

    due_now = checks.probe_due_now(after, now)
    if not due_now:
        rig.clock.advance(RECOVERY + 1)
    when = "at once" if due_now else f"after advance({RECOVERY + 1})"
    rig.phase = "healthy"
    rig.behaviour = "ok"
    completed = True
    for number in range(1, spec.success_threshold + 1):
        calls = rig.downstream_calls
        result = handle.call()
        assert rig.store.wait_idle(1.0)
        stored = rig.stored_sync(handle.circuit)
        reached = rig.downstream_calls - calls
        if not checks.healthy_call(
            number, when, result, reached, handle.breaker.state, stored, rig.clock.time()
        ):
            completed = False
            break
    info = anyio.run(handle.breaker.info)
    checks.recovered(info.state, after, rig.transitions, completed)
    checks.verdict(injector)


# -- the suite's own bookkeeping ----------------------------------------------------------


def test_docstring_counts_every_cell() -> None:
    """The module docstring states how many points x forms x styles are injected."""
    async_count = len(list(async_cells()))
    sync_count = len(list(sync_cells()))
    enumerations = len(list(enumeration_cases())) + len(SCENARIOS) * len(SYNC_FORMS)
    total = async_count + sync_count
    doc = __doc__ or ""
    points = sum(len(expected_points(s, "decorator")) for s in SCENARIOS)
    assert f"Coverage: {points} await points over {len(SCENARIOS)} victim steps" in doc
    assert f"{enumerations} enumeration checks" in doc
    if HAS_311:
        assert f"{total} injected cells in all" in doc
    else:
        assert f"TaskGroup: {total})" in doc
