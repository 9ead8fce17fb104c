"""The pure state machine, checked against a tiny reference model of a fleet.

Several ``CircuitStateMachine`` instances share one ``_RecordTable``, like processes
sharing a store. The test plays their drivers: it hands them the time, carries out the
store operations they ask for, and holds admitted calls and unanswered writes so that
processes interleave. The reference model is written from the rules of the circuit, not
from the machine's code:

- the store: each operation's condition and effect, as ``PersistenceStore`` documents them;
- per process: the last record it was handed and when (its cache), the probe lease it
  won and still holds, its probe successes under that lease, its closed failure streak;
- the fleet: which probe leases were taken over, and the transitions each process made.

The store also goes down for a few operations at a time: a read fails (the call runs as
if closed), and a write either fails before it applies or applies with its answer lost
(a timeout after commit); the machine is told ``None`` in both cases.

Below the state machine, examples pin the same rules down one scenario at a time.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import event, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from aiocircuit._circuit import CircuitInfo, CircuitState, CircuitTransition
from aiocircuit._state import (
    ADMIT_CLOSED,
    REFRESH,
    Admit,
    CircuitStateMachine,
    Outcome,
    Reject,
)
from aiocircuit._writes import (
    AcquireProbe,
    Close,
    Election,
    Followup,
    ReleaseProbe,
    RenewProbe,
    Reopen,
    Trip,
    WriteKind,
)
from aiocircuit.persistence._base import CLOSED_RECORD, CircuitRecord, WriteResult
from aiocircuit.persistence._memory import _RecordTable

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN

NAME = "payments"
WALL_START = 1_800_000_000.0
RECOVERY_TIMEOUT = 10.0
MAX_PROCESSES = 3

# Steps around the interesting boundaries (cache age 5, recovery timeout 10, whole
# seconds in the store), plus arbitrary ones.
TIME_STEPS = st.sampled_from([0.0, 0.4, 1.0, 4.9, 5.0, 5.1, 9.9, 10.0, 10.1, 30.0]) | st.floats(
    0.0, 25.0, allow_nan=False, allow_infinity=False
)


# -- the reference model of the store --------------------------------------------------


def expected_write(
    current: CircuitRecord | None, write: Election | Followup
) -> CircuitRecord | None:
    """The record a conditional write stores, or ``None`` if its condition fails.

    Written from the ``PersistenceStore`` docstrings."""
    state = CLOSED if current is None else current.state
    if isinstance(write, Trip):
        seen = write.seen_opened_at
        applies = state is CLOSED or (
            state is OPEN and seen is not None and current is not None and current.opened_at == seen
        )
        if not applies:
            return None
        return CircuitRecord(
            OPEN, write.failure_count, write.opened_at, open_period=write.open_period
        )
    if current is None:
        return None
    if isinstance(write, AcquireProbe):
        election = (
            state is OPEN
            and current.probe_owner is None
            and current.opened_at == write.seen_opened_at
        )
        takeover = (
            state is HALF_OPEN
            and current.lease_expiry is not None
            and current.lease_expiry <= write.now
            and (write.seen_owner is None or current.probe_owner == write.seen_owner)
        )
        if not (election or takeover):
            return None
        return replace(
            current,
            state=HALF_OPEN,
            failure_count=0,
            probe_owner=write.owner,
            lease_expiry=write.lease_expiry,
        )
    assert isinstance(write, (RenewProbe, ReleaseProbe, Close, Reopen))
    if current.probe_owner != write.owner:
        return None  # every probe write is fenced by the owner id
    if isinstance(write, (RenewProbe, ReleaseProbe)):
        return replace(current, lease_expiry=write.lease_expiry)
    if isinstance(write, Close):
        return CircuitRecord(CLOSED)
    return CircuitRecord(
        OPEN, 0, write.opened_at, open_period=write.open_period, reopen_count=write.reopen_count
    )


def lease_expiry(wall: float) -> float:
    """A lease taken or renewed at ``wall`` runs for the recovery timeout (at least a
    second, which the one here is)."""
    return wall + RECOVERY_TIMEOUT


def snapshot(info: CircuitInfo) -> CircuitInfo:
    """``info`` without what only the machine can add (the period, when to probe)."""
    return replace(info, open_period=None, probe_at=None)


def check_well_formed(record: CircuitRecord | None) -> None:
    """HALF_OPEN has an owner, a lease expiry and opened_at; OPEN has opened_at and no
    lease; CLOSED has neither."""
    if record is None:
        return
    if record.state is HALF_OPEN:
        assert record.probe_owner is not None
        assert record.lease_expiry is not None
        assert record.opened_at is not None
    elif record.state is OPEN:
        assert record.opened_at is not None
        assert record.probe_owner is None
        assert record.lease_expiry is None
    else:
        assert record.opened_at is None
        assert record.probe_owner is None
        assert record.lease_expiry is None


# -- the reference model of a process --------------------------------------------------


@dataclass
class Process:
    """One process: its machine, and what the model expects that machine to know."""

    machine: CircuitStateMachine
    view: CircuitRecord = CLOSED_RECORD  # the last record handed to the machine
    seen_at: float = -math.inf  # monotonic time it was handed
    lease: str | None = None  # the probe lease this process won and still holds
    successes: int = 0  # probe successes under `lease`
    # Counted failures (closed calls failing while the process sees CLOSED) since the
    # last closed success or trip attempt. `clean` also restarts whenever the store
    # changes or the process's view enters or leaves CLOSED ("CLOSED throughout"), so
    # the machine's own count lies between the two.
    clean: int = 0
    loose: int = 0
    transitions: list[CircuitTransition] = field(default_factory=list)


@dataclass(eq=False)
class Call:
    """An admitted call that is still running."""

    process: int
    admitted: Admit
    slot_at: float = 0.0  # monotonic time its probe slot was taken (probes only)


@dataclass
class InFlight:
    """A write a machine asked for that the store has not answered yet."""

    process: int
    write: Election | Followup
    slot_at: float = 0.0  # monotonic time the probe slot it holds was taken


class CircuitFleet(RuleBasedStateMachine):
    """Several processes drive one circuit through a shared store."""

    def __init__(self) -> None:
        super().__init__()
        self.table = _RecordTable()
        self.stored: CircuitRecord | None = None
        self.processes: list[Process] = []
        self.running: list[Call] = []
        self.in_flight: list[InFlight] = []
        self.owner_ids = (f"owner-{n}" for n in itertools.count())
        self.issued_owners: set[str] = set()
        self.latest_owner: str | None = None  # the last lease the store granted
        self.taken_over: set[str] = set()  # leases the store took over after expiry
        # While the store is down, reads fail and writes either fail before they apply
        # ("fail") or apply with their answer lost ("lost", a timeout after commit).
        self.outage: str | None = None
        self.outage_left = 0  # store operations until it is back
        self.now = 0.0
        self.wall_start = WALL_START

    # -- set-up --------------------------------------------------------------------

    @initialize(
        processes=st.integers(2, MAX_PROCESSES),
        failure_threshold=st.integers(1, 3),
        success_threshold=st.integers(1, 3),
        cache_max_age=st.sampled_from([0.0, 5.0]),
        wall_fraction=st.sampled_from([0.0, 0.5, 0.999]),
        stored=st.sampled_from([CLOSED, OPEN, HALF_OPEN]),
        opened_ago=st.sampled_from([0, 5, 10, 30]),
        lease_taken_ago=st.sampled_from([0, 5, 10, 15]),
    )
    def configure(
        self,
        processes: int,
        failure_threshold: int,
        success_threshold: int,
        cache_max_age: float,
        wall_fraction: float,
        stored: CircuitState,
        opened_ago: int,
        lease_taken_ago: int,
    ) -> None:
        """Start the fleet on a store that may already hold an open circuit, or one whose
        probe holder vanished (its lease taken ``lease_taken_ago`` seconds ago, at least
        a recovery timeout after the circuit opened)."""
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.cache_max_age = cache_max_age
        self.wall_start = WALL_START + wall_fraction
        lease_taken = self.wall - lease_taken_ago
        if stored is HALF_OPEN:
            opened_ago += math.ceil(lease_taken_ago + RECOVERY_TIMEOUT)
        opened_at = int(self.wall) - opened_ago
        expires_at = int(self.wall) + 7200
        if stored is not CLOSED:
            self.table.trip(
                NAME,
                failure_count=failure_threshold,
                opened_at=opened_at,
                seen_opened_at=None,
                open_period=RECOVERY_TIMEOUT,
                expires_at=expires_at,
            )
            self.stored = CircuitRecord(
                OPEN, failure_threshold, opened_at, open_period=RECOVERY_TIMEOUT
            )
        if stored is HALF_OPEN:
            lease = lease_expiry(lease_taken)
            self.table.acquire_probe(
                NAME,
                owner="vanished",
                seen_opened_at=opened_at,
                now=lease_taken,
                lease_expiry=lease,
                expires_at=expires_at,
            )
            self.stored = CircuitRecord(
                HALF_OPEN, 0, opened_at, "vanished", lease, RECOVERY_TIMEOUT
            )
            self.issued_owners.add("vanished")
            self.latest_owner = "vanished"
        for _ in range(processes):
            machine = CircuitStateMachine(
                NAME,
                failure_threshold=failure_threshold,
                success_threshold=success_threshold,
                recovery_timeout=RECOVERY_TIMEOUT,
                cache_max_age=cache_max_age,
                new_owner_id=lambda: next(self.owner_ids),
            )
            self.processes.append(Process(machine))

    # -- clocks --------------------------------------------------------------------

    @property
    def mono(self) -> float:
        return self.now

    @property
    def wall(self) -> float:
        return self.wall_start + self.now

    @rule(seconds=TIME_STEPS)
    def advance(self, seconds: float) -> None:
        """Both clocks move on together."""
        self.now += seconds

    # -- the store's health --------------------------------------------------------

    @rule(mode=st.sampled_from(["fail", "lost"]), operations=st.integers(1, 4))
    def store_goes_down(self, mode: str, operations: int) -> None:
        """The next ``operations`` store operations fail."""
        self.outage, self.outage_left = mode, operations

    def store_down(self) -> str | None:
        """How the store operation about to be made fails, if it does."""
        if self.outage_left == 0:
            return None
        self.outage_left -= 1
        return self.outage

    # -- model helpers -------------------------------------------------------------

    def process(self, index: int) -> Process:
        return self.processes[index % len(self.processes)]

    def busy(self, index: int) -> bool:
        """Whether the process has a probe being elected, running or written, whose slot
        has not outlived the lease it was taken for."""

        def holds(slot_at: float) -> bool:
            return self.mono < slot_at + RECOVERY_TIMEOUT

        return any(
            c.process == index and c.admitted.probe_owner is not None and holds(c.slot_at)
            for c in self.running
        ) or any(
            f.process == index and f.write.kind is not WriteKind.TRIP and holds(f.slot_at)
            for f in self.in_flight
        )

    def hand(self, proc: Process, record: CircuitRecord | None) -> None:
        """Model the machine being handed a record the store returned."""
        record = CLOSED_RECORD if record is None else record
        if (proc.view.state is CLOSED) != (record.state is CLOSED):
            proc.clean = 0
        proc.view = record
        proc.seen_at = self.mono
        if proc.lease is not None and record.probe_owner != proc.lease:
            proc.lease = None  # the store moved on without us

    def check_reject(self, proc: Process, decision: Reject, retry_after: float | None) -> None:
        """A rejection describes what the process saw, and says when to retry."""
        assert decision.retry_after >= 0
        assert snapshot(decision.circuit) == proc.view.info(NAME)
        if retry_after is not None:
            assert decision.retry_after == pytest.approx(retry_after)

    def check_write_arguments(self, write: Election | Followup) -> None:
        # A record must outlive the recovery timeout, or it could vanish mid-cycle.
        assert write.expires_at >= self.wall + RECOVERY_TIMEOUT

    def store(self, index: int, write: Election | Followup) -> WriteResult | None:
        """Carry out ``write`` against the table (unless it fails first) and the model."""
        fault = self.store_down()
        if fault == "fail":
            return None
        before = self.stored
        after = expected_write(before, write)
        result = write.apply(self.table, NAME)
        assert result.won == (after is not None), (write, before)
        if result.won and write.kind is WriteKind.ACQUIRE:
            # An election replaces OPEN, a takeover HALF_OPEN: only the first is a transition.
            assert before is not None
            assert result.replaced is before.state
        if after is not None:
            self.stored = after
            self.store_changed(before, after, write)
        assert result.record == self.stored
        if fault == "lost":
            return None
        proc = self.process(index)
        self.hand(proc, result.record)
        before_state = CLOSED if before is None else before.state
        if result.won and after is not None and after.state is not before_state:
            opened_at = None if after.state is CLOSED else after.opened_at
            proc.transitions.append(CircuitTransition(NAME, before_state, after.state, opened_at))
        return result

    def store_changed(
        self, before: CircuitRecord | None, after: CircuitRecord, write: Election | Followup
    ) -> None:
        """Fleet-wide bookkeeping and checks for a write the store applied."""
        for proc in self.processes:
            proc.clean = 0  # the circuit did not stay CLOSED throughout their streaks
        event(f"store: {write.kind.name} won on {CLOSED if before is None else before.state}")
        if isinstance(write, AcquireProbe):
            assert before is not None
            if before.state is OPEN:
                # No probe before the recovery timeout has passed.
                assert before.opened_at is not None
                assert write.now >= before.opened_at + RECOVERY_TIMEOUT
            else:
                assert before.probe_owner is not None
                self.taken_over.add(before.probe_owner)
            self.latest_owner = after.probe_owner

    def expected_admission(self, index: int) -> tuple[str, Any]:
        """What the rules say a process decides, given what it has seen."""
        proc = self.process(index)
        view, wall = proc.view, self.wall
        if view.state is CLOSED:
            return ("admit", None)
        if self.busy(index):
            return ("reject", None)  # one probe per process at a time
        if proc.lease is not None:
            assert view.probe_owner == proc.lease
            assert view.lease_expiry is not None
            if wall < view.lease_expiry:
                return ("renew", proc.lease)  # probes again, renewing the lease it holds
            proc.lease = None  # it ran out: take it again like anyone else
        if view.state is OPEN:
            assert view.opened_at is not None
            due = view.opened_at + RECOVERY_TIMEOUT
            return ("reject", due - wall) if wall < due else ("acquire", None)
        assert view.lease_expiry is not None
        if wall < view.lease_expiry:
            return ("reject", view.lease_expiry - wall)
        return ("acquire", None)

    def admitted(self, index: int, decision: Admit, *, answered_late: bool = False) -> Call:
        """Start running an admitted call; check a probe is the fleet's only one."""
        owner = decision.probe_owner
        if owner is not None:
            # A probe runs only under the lease the store holds, with a full lease ahead
            # of it, unless the answer that admitted it came late: then its lease may
            # lapse before it starts, as any may while its probe runs (see check_probes).
            stored = self.stored
            assert stored is not None
            assert stored.state is HALF_OPEN
            assert stored.probe_owner == owner
            assert stored.lease_expiry is not None
            assert answered_late or stored.lease_expiry >= self.wall + RECOVERY_TIMEOUT
        call = Call(index % len(self.processes), decision, self.mono)
        self.running.append(call)
        self.check_probes()
        return call

    def check_probes(self) -> None:
        """At most one probe runs in the fleet, unless the lease of another one lapsed and
        was taken over."""
        probes = [c.admitted.probe_owner for c in self.running if c.admitted.probe_owner]
        assert len(probes) == len(set(probes)), "two calls run under one lease"
        live = [owner for owner in probes if owner not in self.taken_over]
        assert len(live) <= 1, f"{live} probe at once"
        assert all(owner == self.latest_owner for owner in live)

    # -- admission -----------------------------------------------------------------

    @rule(
        seconds=TIME_STEPS,
        index=st.integers(0, MAX_PROCESSES - 1),
        outcome=st.sampled_from(Outcome),
    )
    def call(self, seconds: float, index: int, outcome: Outcome) -> None:
        """After ``seconds``, a call arrives and ends before anything else happens."""
        self.now += seconds
        call = self.start(index, defer=False)
        if call is not None:
            self.finish(call, outcome, defer=False)

    @rule(index=st.integers(0, MAX_PROCESSES - 1), defer=st.booleans())
    def start_call(self, index: int, defer: bool) -> None:
        """A call arrives and keeps running; ``defer`` leaves a store write it needs
        unanswered for now."""
        self.start(index, defer)

    def start(self, index: int, defer: bool) -> Call | None:
        """Admit a call on a process, checking each decision against the model; return
        it if it runs."""
        index %= len(self.processes)
        proc = self.process(index)
        machine = proc.machine
        fresh = self.mono < proc.seen_at + self.cache_max_age
        # The drivers' fast path: one comparison admits exactly a fresh, closed circuit.
        assert (self.mono < machine.fast_deadline) == (fresh and proc.view.state is CLOSED)
        decision = machine.admit(self.mono, self.wall)
        if fresh:
            assert decision is not REFRESH, "read although the cache is fresh"
        else:
            assert decision is REFRESH, "acted on a stale cache"
            if self.store_down():
                return self.admitted(index, ADMIT_CLOSED)  # fail open, and cache nothing
            record = self.table.read(NAME)
            assert record == self.stored
            machine.on_read(record, self.mono)
            self.hand(proc, record)
            decision = machine.admit(self.mono, self.wall, refreshed=True)
        assert snapshot(machine.info()) == proc.view.info(NAME)
        kind, detail = self.expected_admission(index)
        if kind == "admit":
            assert decision is ADMIT_CLOSED  # a closed circuit never writes
        elif kind == "reject":
            assert isinstance(decision, Reject), decision
            self.check_reject(proc, decision, detail)
        else:
            # A probe starts only with a write that takes the lease or renews ours.
            assert isinstance(decision, (AcquireProbe, RenewProbe)), decision
            if kind == "renew":
                assert isinstance(decision, RenewProbe)
                assert decision.owner == detail
            else:
                assert isinstance(decision, AcquireProbe)
                assert decision.owner not in self.issued_owners
                self.issued_owners.add(decision.owner)
                assert decision.seen_opened_at == proc.view.opened_at
                # An election is made at the current time; a takeover is fenced on the
                # expiry of the lease seen to lapse.
                seen_lease = proc.view.lease_expiry
                assert decision.now == (self.wall if proc.view.state is OPEN else seen_lease)
                assert decision.seen_owner == proc.view.probe_owner
            assert decision.lease_expiry == lease_expiry(self.wall)
            self.check_write_arguments(decision)
            if defer:
                self.in_flight.append(InFlight(index, decision, self.mono))
                return None
            return self.start_probe(index, decision, answered_late=False)
        return self.admitted(index, decision) if isinstance(decision, Admit) else None

    def start_probe(self, index: int, write: Election, *, answered_late: bool) -> Call | None:
        """Answer the write that takes or renews a probe lease, and run what it admits."""
        proc = self.process(index)
        result = self.store(index, write)
        decision = proc.machine.on_election(write, result, self.mono)
        if result is None:
            assert decision is ADMIT_CLOSED  # a failed store fails open
        elif result.won:
            owner = write.owner
            assert decision == Admit(owner)
            if write.kind is WriteKind.ACQUIRE:
                proc.lease, proc.successes = owner, 0
            elif proc.lease is None:
                # Answered after the process gave the lease up for lapsed: it holds it
                # again, with no successes under it.
                assert answered_late
                proc.lease, proc.successes = owner, 0
            else:
                assert proc.lease == owner
        elif proc.view.state is CLOSED:
            assert decision is ADMIT_CLOSED  # someone closed it meanwhile
        else:
            assert isinstance(decision, Reject), decision
            self.check_reject(proc, decision, None)
        if isinstance(decision, Admit):
            return self.admitted(index, decision, answered_late=answered_late)
        return None

    @rule(index=st.integers(0, MAX_PROCESSES - 1))
    def refresh(self, index: int) -> None:
        """A read outside admission (``CircuitBreaker.info()``)."""
        if self.store_down():
            return
        proc = self.process(index)
        record = self.table.read(NAME)
        proc.machine.on_read(record, self.mono)
        self.hand(proc, record)

    # -- outcomes ------------------------------------------------------------------

    @precondition(lambda self: self.running)
    @rule(
        pick=st.integers(0, 7),
        outcome=st.sampled_from(Outcome),
        defer=st.booleans(),
    )
    def finish_call(self, pick: int, outcome: Outcome, defer: bool) -> None:
        """A running call ends; ``defer`` leaves the write it calls for unanswered."""
        self.finish(self.running[pick % len(self.running)], outcome, defer)

    def finish(self, call: Call, outcome: Outcome, defer: bool) -> None:
        """End a running call, checking the write it calls for against the model."""
        self.running.remove(call)
        index, owner = call.process, call.admitted.probe_owner
        proc = self.process(index)
        write = proc.machine.on_outcome(call.admitted, outcome, self.mono, self.wall)
        if owner is None:
            self.closed_outcome(proc, outcome, write)
        else:
            self.probe_outcome(proc, owner, outcome, write)
        if write is None:
            return
        self.check_write_arguments(write)
        if defer:
            self.in_flight.append(InFlight(index, write, call.slot_at))
        else:
            self.finish_write(index, write)

    def closed_outcome(self, proc: Process, outcome: Outcome, write: Followup | None) -> None:
        """A closed circuit counts failures and trips on a full streak, and nothing else."""
        if proc.view.state is not CLOSED or outcome is Outcome.IGNORED:
            assert write is None  # nothing to count
            return
        if outcome is Outcome.SUCCESS:
            assert write is None  # a healthy closed circuit never writes
            proc.clean = proc.loose = 0
            return
        proc.clean += 1
        proc.loose += 1
        if proc.clean >= self.failure_threshold:
            assert write is not None, "a full streak on a closed circuit did not trip it"
        if write is None:
            return
        assert isinstance(write, Trip)
        assert proc.loose >= self.failure_threshold, "tripped before a full streak"
        assert write.failure_count == self.failure_threshold
        assert write.opened_at == self.wall
        assert write.open_period == RECOVERY_TIMEOUT
        assert write.seen_opened_at is None
        proc.clean = proc.loose = 0

    def probe_outcome(
        self, proc: Process, owner: str, outcome: Outcome, write: Followup | None
    ) -> None:
        """Enough successes close, a failure reopens, an ignored outcome releases."""
        if outcome is Outcome.SUCCESS:
            if proc.lease == owner:
                proc.successes += 1
                if proc.successes < self.success_threshold:
                    assert write is None  # the next probe renews the lease as it starts
                    return
            elif write is None:
                return  # a probe under a lease this process lost meanwhile
            assert write is not None, "enough probe successes did not close the circuit"
            assert isinstance(write, Close)
        elif outcome is Outcome.FAILURE:
            assert write is not None, "a failed probe did not reopen the circuit"
            assert isinstance(write, Reopen)
            assert write.opened_at == self.wall
            assert write.open_period == RECOVERY_TIMEOUT  # no backoff configured
        else:
            assert write is not None, "an ignored probe did not release its lease"
            assert isinstance(write, ReleaseProbe)
            assert write.lease_expiry <= self.wall
        assert write.owner == owner

    def finish_write(self, index: int, write: Followup) -> None:
        """Answer a write that followed a call."""
        proc = self.process(index)
        result = self.store(index, write)
        proc.machine.on_write(write, result, self.mono)
        owner = getattr(write, "owner", None)
        if proc.lease is not None and proc.lease == owner:
            if write.kind is WriteKind.REOPEN:
                proc.lease = None  # a failed probe gives its lease up, won or not
            elif write.kind is WriteKind.RELEASE and result is not None:
                proc.lease = None

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 7))
    def answer_write(self, pick: int) -> None:
        """The store answers a write left in flight (or fails it, if it is down)."""
        pending = self.in_flight.pop(pick % len(self.in_flight))
        if isinstance(pending.write, (AcquireProbe, RenewProbe)):
            self.start_probe(pending.process, pending.write, answered_late=True)
        else:
            self.finish_write(pending.process, pending.write)

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        """The stored record is the model's, and well formed."""
        assert self.table.read(NAME) == self.stored
        check_well_formed(self.stored)

    @invariant()
    def transitions_match(self) -> None:
        """Each process records exactly the state changes its answered writes made."""
        for proc in self.processes:
            assert list(proc.machine.transitions) == proc.transitions

    @invariant()
    def views_match(self) -> None:
        """Each process acts on the last record it was handed."""
        for proc in self.processes:
            assert snapshot(proc.machine.info()) == proc.view.info(NAME)


CircuitFleet.TestCase.settings = settings(max_examples=1000, stateful_step_count=50, deadline=None)


class TestCircuitFleet(CircuitFleet.TestCase):  # type: ignore[misc, valid-type]
    """Processes sharing a store follow the circuit's rules under any interleaving."""


# -- examples ------------------------------------------------------------------------


def make_fleet(processes: int = 2, **config: Any) -> tuple[_RecordTable, list[CircuitStateMachine]]:
    """A store and ``processes`` machines on it (thresholds 1, cache 5 s unless given)."""
    owner_ids = (f"owner-{n}" for n in itertools.count())
    options: dict[str, Any] = {
        "failure_threshold": 1,
        "success_threshold": 1,
        "recovery_timeout": RECOVERY_TIMEOUT,
        "cache_max_age": 5.0,
        **config,
    }
    machines = [
        CircuitStateMachine(NAME, new_owner_id=lambda: next(owner_ids), **options)
        for _ in range(processes)
    ]
    return _RecordTable(), machines


def admit(machine: CircuitStateMachine, table: _RecordTable, at: float) -> Admit | Reject:
    """The driver's admission loop ``at`` seconds in (wall clock ``WALL_START + at``)."""
    decision = machine.admit(at, WALL_START + at)
    if decision is REFRESH:
        machine.on_read(table.read(NAME), at)
        decision = machine.admit(at, WALL_START + at, refreshed=True)
    if isinstance(decision, (AcquireProbe, RenewProbe)):
        result = decision.apply(table, NAME)
        decision = machine.on_election(decision, result, at)
    assert isinstance(decision, (Admit, Reject))
    return decision


def finish(
    machine: CircuitStateMachine,
    table: _RecordTable,
    admitted: Admit | Reject,
    outcome: Outcome,
    at: float,
) -> None:
    """Record how an admitted call ended, making the write it calls for."""
    assert isinstance(admitted, Admit)
    write = machine.on_outcome(admitted, outcome, at, WALL_START + at)
    if write is not None:
        result = write.apply(table, NAME)
        machine.on_write(write, result, at)


def trip(machine: CircuitStateMachine, table: _RecordTable, at: float) -> None:
    """Trip a circuit with failure_threshold 1."""
    finish(machine, table, admit(machine, table, at), Outcome.FAILURE, at)
    assert table.read(NAME) == CircuitRecord(OPEN, 1, WALL_START + at, open_period=RECOVERY_TIMEOUT)


def test_full_failure_streak_trips_once() -> None:
    """A full streak of failures trips the circuit once; a success restarts the streak."""
    table, (machine,) = make_fleet(1, failure_threshold=3)
    for outcome in [Outcome.FAILURE, Outcome.FAILURE, Outcome.SUCCESS, Outcome.IGNORED]:
        finish(machine, table, admit(machine, table, 0.0), outcome, 0.0)
    for _ in range(2):
        finish(machine, table, admit(machine, table, 0.5), Outcome.FAILURE, 0.5)
    assert table.read(NAME) is None
    finish(machine, table, admit(machine, table, 0.7), Outcome.FAILURE, 0.7)
    opened_at = WALL_START + 0.7
    assert table.read(NAME) == CircuitRecord(OPEN, 3, opened_at, open_period=RECOVERY_TIMEOUT)
    assert list(machine.transitions) == [CircuitTransition(NAME, CLOSED, OPEN, opened_at)]


def test_open_circuit_rejects_until_recovery_timeout_then_admits_one_probe() -> None:
    """OPEN rejects until its recovery timeout is over, then admits one probe in the fleet."""
    table, (a, b) = make_fleet()
    trip(a, table, 0.5)
    early = admit(b, table, 9.0)
    assert isinstance(early, Reject)
    assert early.retry_after == pytest.approx(1.5)
    assert early.circuit.probe_at == WALL_START + 10.5
    assert isinstance(admit(a, table, 10.499), Reject)  # to the sub-second
    probe = admit(a, table, 10.5)
    assert isinstance(probe, Admit)
    assert probe.probe_owner is not None
    assert isinstance(admit(a, table, 10.5), Reject)  # one probe per process, too
    lost_election = admit(b, table, 10.5)  # B's cached view still says OPEN
    assert isinstance(lost_election, Reject)
    assert lost_election.circuit.state is HALF_OPEN
    later = admit(b, table, 10.5)
    assert isinstance(later, Reject)
    assert later.retry_after == pytest.approx(RECOVERY_TIMEOUT)
    assert [t.to_state for t in a.transitions] == [OPEN, HALF_OPEN]
    assert list(b.transitions) == []


def test_consecutive_probe_successes_close_the_circuit() -> None:
    """success_threshold probes succeeding under one (renewed) lease close the circuit."""
    table, (a, b) = make_fleet(success_threshold=2)
    trip(a, table, 0.0)
    first = admit(a, table, 10.0)
    finish(a, table, first, Outcome.SUCCESS, 11.0)
    record = table.read(NAME)
    assert record is not None
    assert record.state is HALF_OPEN
    second = admit(a, table, 12.5)
    assert second == first  # the same lease, renewed
    assert table.read(NAME) == replace(record, lease_expiry=lease_expiry(WALL_START + 12.5))
    assert isinstance(admit(b, table, 12.5), Reject)
    finish(a, table, second, Outcome.SUCCESS, 13.0)
    assert table.read(NAME) == CircuitRecord(CLOSED)
    assert a.transitions[-1] == CircuitTransition(NAME, HALF_OPEN, CLOSED, None)
    assert admit(b, table, 20.0) is ADMIT_CLOSED


def test_probe_failure_reopens_at_the_failure_time() -> None:
    """A failed probe reopens the circuit with opened_at = the failure's time."""
    table, (a, b) = make_fleet()
    trip(a, table, 0.0)
    probe = admit(a, table, 10.0)
    finish(a, table, probe, Outcome.FAILURE, 12.3)
    opened_at = WALL_START + 12.3
    assert table.read(NAME) == CircuitRecord(
        OPEN, 0, opened_at, open_period=RECOVERY_TIMEOUT, reopen_count=1
    )
    assert a.transitions[-1] == CircuitTransition(NAME, HALF_OPEN, OPEN, opened_at)
    rejected = admit(b, table, 13.0)
    assert isinstance(rejected, Reject)
    assert rejected.retry_after == pytest.approx(opened_at + RECOVERY_TIMEOUT - WALL_START - 13)


def test_ignored_probe_lets_the_next_caller_probe_at_once() -> None:
    """An ignored probe releases its lease: the next caller anywhere probes at once."""
    table, (a, b) = make_fleet(cache_max_age=0.0)
    trip(a, table, 0.0)
    probe = admit(a, table, 10.0)
    finish(a, table, probe, Outcome.IGNORED, 10.5)
    next_probe = admit(b, table, 10.5)
    assert isinstance(probe, Admit)
    assert isinstance(next_probe, Admit)
    assert next_probe.probe_owner not in (None, probe.probe_owner)
    record = table.read(NAME)
    assert record is not None
    assert record.probe_owner == next_probe.probe_owner
    assert list(b.transitions) == []


def test_store_failures_fail_open() -> None:
    """Failed reads, trips and elections never raise: the call runs as if closed."""
    table, (a, b) = make_fleet()
    assert a.admit(0.0, WALL_START) is REFRESH  # the read fails: the driver admits closed
    assert a.admit(0.0, WALL_START) is REFRESH  # nothing was cached: it asks again
    a.on_read(None, 0.0)  # the next read answers
    write = a.on_outcome(ADMIT_CLOSED, Outcome.FAILURE, 0.0, WALL_START)
    assert write is not None
    a.on_write(write, None, 0.0)  # the trip failed
    assert list(a.transitions) == []
    trip(a, table, 0.5)  # the next streak trips
    b.on_read(table.read(NAME), 10.5)
    election = b.admit(10.5, WALL_START + 10.5)
    assert isinstance(election, (AcquireProbe, RenewProbe))
    assert b.on_election(election, None, 10.5) is ADMIT_CLOSED
    assert list(b.transitions) == []
    assert table.read(NAME) == CircuitRecord(
        OPEN, 1, WALL_START + 0.5, open_period=RECOVERY_TIMEOUT
    )


def test_fresh_cache_is_not_read_and_closed_circuit_never_writes() -> None:
    """A fresh cache is not read again, and a healthy closed circuit never writes."""
    table, (machine,) = make_fleet(1, failure_threshold=2)
    assert machine.admit(0.0, WALL_START) is REFRESH
    machine.on_read(table.read(NAME), 0.0)
    for at in [0.0, 2.0, 4.9]:
        assert machine.admit(at, WALL_START + at) is ADMIT_CLOSED
        assert machine.on_outcome(ADMIT_CLOSED, Outcome.SUCCESS, at, WALL_START + at) is None
        assert machine.on_outcome(ADMIT_CLOSED, Outcome.FAILURE, at, WALL_START + at) is None
    assert machine.admit(5.0, WALL_START + 5) is REFRESH


def test_takeover_of_a_released_lease_on_a_stale_view_is_no_transition() -> None:
    """Taking over a released lease on a cached OPEN view is no OPEN -> HALF_OPEN transition."""
    # The store went HALF_OPEN -> HALF_OPEN; A already recorded the fleet's OPEN ->
    # HALF_OPEN when it won the election, so on_transition must not fire it again on B.
    table, (a, b) = make_fleet()
    trip(a, table, 0.0)
    assert isinstance(admit(b, table, 9.0), Reject)  # B caches OPEN until 14.0
    probe = admit(a, table, 10.0)
    finish(a, table, probe, Outcome.IGNORED, 10.0)  # released: lease_expiry 0
    takeover = admit(b, table, 10.0)  # B's cache is fresh: it elects on OPEN
    assert isinstance(takeover, Admit)
    assert takeover.probe_owner is not None
    assert [t.to_state for t in a.transitions] == [OPEN, HALF_OPEN]
    assert list(b.transitions) == []
