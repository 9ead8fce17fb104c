"""The circuit state machine: plain data in, decisions out.

No I/O, no clock reads, no awaits. The drivers (async and sync) hand it the time and the
results of store operations and carry out what it decides, so the two call paths cannot
drift apart. Callers serialise access to one machine (the drivers hold a lock).

A process holds, per circuit: the last record it saw and until when it may trust it
(``fresh_until``, monotonic), its own consecutive-failure streak while closed, and, while
it probes, the lease it holds. Everything else is in the store.

Clocks: the store's timestamps are Unix seconds, written by many hosts. This process
reads them once, when a record arrives, and turns them into local monotonic deadlines
(when the open period ends, when a lease lapses), clamped to what the configuration
makes possible. A wall-clock step in this process after that moves nothing, and a stored
value that is absurd (milliseconds, 1e125, negative) cannot keep a circuit rejecting
for longer than the configuration allows.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ._circuit import CircuitInfo, CircuitState, CircuitTransition
from ._writes import (
    AcquireProbe,
    Close,
    Election,
    Followup,
    ReleaseProbe,
    RenewProbe,
    Reopen,
    Trip,
)
from .persistence._base import CLOSED_RECORD, CircuitRecord, WriteResult

# Stored records outlive their last write by this much beyond the recovery timeout, so a
# live circuit is never reaped mid-cycle and an abandoned one cleans itself up
# (Powertools' PERSISTED_STATE_TTL_BUFFER).
RECORD_TTL_BUFFER = 3600

# A change of more than this in Unix time minus monotonic time is a step of the wall
# clock (an operator, a VM resumed, NTP stepping), not the slow slew NTP applies.
WALL_CLOCK_STEP = 1.0

_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_FORCED_OPEN = CircuitState.FORCED_OPEN
_FORCED_CLOSED = CircuitState.FORCED_CLOSED
_ADMITTING = frozenset({_CLOSED, _FORCED_CLOSED})  # states in which every call runs


class Outcome(enum.Enum):
    """How an admitted call ended, as far as the circuit is concerned."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"  # cancellation, a BaseException, or an exception not counted


class Refresh:
    """Decision: the cached record is stale; read the store, then ask again."""

    __slots__ = ()


REFRESH = Refresh()


@dataclass(frozen=True, slots=True)
class Admit:
    """Decision: run the call. ``probe_owner`` is the lease it probes under, or ``None``
    for an ordinary call on a closed circuit."""

    probe_owner: str | None = None


ADMIT_CLOSED = Admit()


@dataclass(frozen=True, slots=True)
class Reject:
    """Decision: do not run the call."""

    circuit: CircuitInfo
    retry_after: float


Decision = Refresh | Admit | Reject | Election


class CircuitStateMachine:
    """One process's view of one circuit, and the rules that move it."""

    __slots__ = (
        "name",
        "failure_threshold",
        "success_threshold",
        "recovery_timeout",
        "cache_max_age",
        "fast_path_enabled",
        "new_owner_id",
        "record",
        "fresh_until",
        "fast_deadline",
        "failures",
        "lease_owner",
        "probe_slot_until",
        "probe_slot_owner",
        "probe_successes",
        "transitions",
        "writes_seen",
        "_longest_wait",
        "_wall_offset",
        "_pin_offset",
        "_deadline_key",
        "_deadline",
    )

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        success_threshold: int,
        recovery_timeout: float,
        cache_max_age: float,
        new_owner_id: Callable[[], str],
        fast_path_enabled: bool = True,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.recovery_timeout = recovery_timeout
        self.cache_max_age = cache_max_age
        self.new_owner_id = new_owner_id
        self.fast_path_enabled = fast_path_enabled
        self.record = CLOSED_RECORD
        self.fresh_until = -math.inf
        # While the circuit is closed and the cached record fresh, a call needs nothing
        # but `monotonic() < fast_deadline`: the drivers' fast path.
        self.fast_deadline = -math.inf
        self.failures = 0
        self.lease_owner: str | None = None
        # While monotonic time is below this, a local probe is being elected, running or
        # written, and other local callers are rejected. A deadline, not a flag: however
        # its holder ends, the slot cannot outlive the lease it was taken for.
        self.probe_slot_until = -math.inf
        self.probe_slot_owner: str | None = None  # the lease the slot was taken for
        self.probe_successes = 0
        self.transitions: deque[CircuitTransition] = deque()
        # Counts the write answers applied: a read that started before one of them
        # carries an older record and must not roll the view back.
        self.writes_seen = 0
        # An open period or a lease never lasts longer than this from when it is seen:
        # recovery_timeout, plus a second for the store's whole-second rounding and one
        # for clock error between hosts.
        self._longest_wait = recovery_timeout + 2
        # Unix time minus monotonic time at the last decision: how a record arriving
        # later, with only a monotonic reading, is placed in Unix time (None until the
        # first decision).
        self._wall_offset: float | None = None
        # When the cached record's open period (OPEN) or lease (HALF_OPEN) ends, in Unix
        # time as this process saw it when the record arrived (the offset of the two
        # clocks then), and the stored values it was computed from.
        self._pin_offset = 0.0
        self._deadline_key: tuple[object, ...] | None = None
        self._deadline = math.inf

    def forget_process_state(self) -> None:
        """Drop everything local (streak, lease, cache): this is now a new process."""
        self.record = CLOSED_RECORD
        self.fresh_until = -math.inf
        self.fast_deadline = -math.inf
        self.failures = 0
        self.lease_owner = None
        self._free_probe_slot(None)
        self.probe_successes = 0
        self.transitions.clear()
        self._deadline_key = None

    # -- reading ---------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        return self.record.state

    def info(self) -> CircuitInfo:
        return self.record.info(self.name)

    def on_read(
        self, record: CircuitRecord | None, mono: float, *, started: int | None = None
    ) -> None:
        """Install a record just read from the store (``None``: no record, closed).

        ``started`` is ``writes_seen`` when the read was sent: if a write's answer
        arrived since, it is newer than this read, and the read is dropped.
        """
        if started is not None and started != self.writes_seen:
            return
        self._adopt(CLOSED_RECORD if record is None else record, mono)

    def _adopt(self, record: CircuitRecord, mono: float) -> None:
        previous = self.record.state
        self.record = record
        self.fresh_until = mono + self.cache_max_age
        if record.state is _CLOSED and previous is not _CLOSED:
            # Another environment finished a recovery cycle: a partial streak from
            # before it is stale.
            self.failures = 0
        if self.lease_owner is not None and record.probe_owner != self.lease_owner:
            self._drop_lease()
        self._update_fast_deadline()
        if self._wall_offset is not None:
            self._pin_deadline(mono, mono + self._wall_offset)

    def _pin_deadline(self, mono: float, wall: float) -> None:
        """Place the cached record's open period or lease on this process's clocks, once
        per stored value: reading the same record again keeps the deadline it had."""
        record = self.record
        key = (record.state, record.opened_at, record.probe_owner, record.lease_expiry)
        if key == self._deadline_key:
            return
        self._deadline_key = key
        self._pin_offset = wall - mono
        # Clamped to what the configuration makes possible (_longest_wait): a stored
        # time in the future, from a host whose clock is far ahead or a value in the
        # wrong unit, cannot make a wait longer than that.
        if record.state is _OPEN:
            opened_at = wall if record.opened_at is None else record.opened_at
            self._deadline = min(opened_at + self.recovery_timeout, wall + self._longest_wait)
        elif record.state is _HALF_OPEN and record.lease_expiry is not None:
            self._deadline = min(record.lease_expiry, wall + self._longest_wait)
        else:
            self._deadline = math.inf

    def _local_wall(self, mono: float, wall: float) -> float:
        """Unix time on the timeline the cached deadline was pinned on. The wall clock
        as read, unless it has stepped since by more than ``WALL_CLOCK_STEP``: then the
        monotonic clock carries the pinned time forward, so a step in this process
        neither shortens nor stretches a wait."""
        pinned = mono + self._pin_offset
        return wall if abs(wall - pinned) <= WALL_CLOCK_STEP else pinned

    def _update_fast_deadline(self) -> None:
        fast = self.fast_path_enabled and self.record.state in _ADMITTING
        self.fast_deadline = self.fresh_until if fast else -math.inf

    def _drop_lease(self) -> None:
        self.lease_owner = None
        self.probe_successes = 0

    def expires_at(self, wall: float) -> int:
        """When a record written at ``wall`` may be reaped (its TTL)."""
        return int(wall + self.recovery_timeout) + RECORD_TTL_BUFFER

    # -- admission -------------------------------------------------------------------

    def admit(self, mono: float, wall: float, *, refreshed: bool = False) -> Decision:
        """Decide what to do with a new call at monotonic time ``mono`` and Unix time
        ``wall``; ``refreshed`` says the record was just read for this call (so it is
        used even when ``cache_max_age`` is 0)."""
        self._wall_offset = wall - mono
        if mono >= self.fresh_until and not refreshed:
            return REFRESH
        record = self.record
        if record.state in _ADMITTING:
            return ADMIT_CLOSED
        if record.state is _FORCED_OPEN:
            # Never probes: nothing admits a call until an operator lifts it, which no
            # one can predict. The wait an ordinary open period has is the honest hint
            # (and a number a Retry-After header can carry).
            return self._reject(self.recovery_timeout)
        if mono < self.probe_slot_until:
            return self._reject(0.0)
        if self._deadline_key is None:
            self._pin_deadline(mono, wall)  # a record adopted before any decision
        now = self._local_wall(mono, wall)
        deadline = self._deadline
        if self.lease_owner is not None:
            if now < deadline:
                return self._renew(mono, wall)
            self._drop_lease()  # our lease ran out: take it again like anyone else
        if record.state is _OPEN:
            if now < deadline:
                return self._reject(deadline - now)
            seen = record.opened_at if record.opened_at is not None else int(wall)
            return self._acquire(seen, wall, mono, wall)
        if record.state is _HALF_OPEN:
            if record.lease_expiry is None:
                # A lease with no expiry can only be reaped by the record's TTL.
                return self._reject(self.recovery_timeout)
            if now < deadline:
                return self._reject(deadline - now)
            # The lease lapsed by this process's clock. The takeover is fenced on the
            # holder and the expiry seen: it applies to that lease, never to one taken
            # since, whatever this host's wall clock says.
            return self._acquire(record.opened_at or 0, record.lease_expiry, mono, wall)
        return self._reject(self.recovery_timeout)

    def _reject(self, retry_after: float) -> Reject:
        return Reject(self.record.info(self.name), retry_after)

    def _lease_expiry(self, wall: float) -> int:
        # Rounded up: a lease always runs at least recovery_timeout, so a probe that
        # starts under it is never taken over sooner than that.
        return math.ceil(wall + self.recovery_timeout)

    def _take_probe_slot(self, owner: str, mono: float) -> None:
        # As long as the lease this probe is elected for, plus the second it is rounded
        # up by: past that, the lease has lapsed in the store as well.
        self.probe_slot_until = mono + self.recovery_timeout + 1
        self.probe_slot_owner = owner

    def _free_probe_slot(self, owner: str | None) -> None:
        """The probe (or election) under ``owner`` is over: free the slot if it is the
        one holding it (``None``: whoever holds it). One whose slot outlived its lease
        and was taken by a newer probe must not free the newer one's."""
        if owner is None or owner == self.probe_slot_owner:
            self.probe_slot_until = -math.inf
            self.probe_slot_owner = None

    def _acquire(self, seen_opened_at: int, now: float, mono: float, wall: float) -> AcquireProbe:
        owner = self.new_owner_id()
        self._take_probe_slot(owner, mono)
        return AcquireProbe(
            owner=owner,
            seen_opened_at=seen_opened_at,
            now=now,
            lease_expiry=self._lease_expiry(wall),
            expires_at=self.expires_at(wall),
            seen=self.record,
            seen_owner=self.record.probe_owner,  # a takeover is of that holder's lease only
        )

    def _renew(self, mono: float, wall: float) -> RenewProbe:
        # Each probe after the first renews the lease as it starts (the previous one
        # succeeded), so a running probe always has a full lease ahead of it.
        assert self.lease_owner is not None
        self._take_probe_slot(self.lease_owner, mono)
        return RenewProbe(
            owner=self.lease_owner,
            lease_expiry=self._lease_expiry(wall),
            expires_at=self.expires_at(wall),
            seen=self.record,
        )

    # -- outcomes --------------------------------------------------------------------

    def on_outcome(self, admitted: Admit, outcome: Outcome, wall: float) -> Followup | None:
        """Record how an admitted call ended; return the write it calls for, if any."""
        owner = admitted.probe_owner
        if owner is None:
            return self._on_closed_outcome(outcome, wall)
        expires_at = self.expires_at(wall)
        if outcome is Outcome.FAILURE:
            return Reopen(owner, int(wall), expires_at, self.record)
        if outcome is Outcome.IGNORED:
            return ReleaseProbe(owner, expires_at, self.record)
        if owner != self.lease_owner:
            # Its lease lapsed or was taken over while it ran: a success cannot close
            # the circuit under it, nor count towards a newer lease's successes.
            self._free_probe_slot(owner)
            return None
        self.probe_successes += 1
        if self.probe_successes >= self.success_threshold:
            return Close(owner, expires_at, self.record)
        self._free_probe_slot(owner)  # the next call probes, renewing the lease
        return None

    def _on_closed_outcome(self, outcome: Outcome, wall: float) -> Trip | None:
        if self.record.state is not _CLOSED:
            return None  # admitted before the circuit left CLOSED: nothing to count
        if outcome is Outcome.SUCCESS:
            self.failures = 0
            return None
        if outcome is Outcome.IGNORED:
            return None
        self.failures += 1
        if self.failures < self.failure_threshold:
            return None
        # Reset before the write, so exactly one of many concurrent failures trips.
        count, self.failures = self.failures, 0
        return Trip(
            failure_count=count,
            opened_at=int(wall),
            seen_opened_at=self.record.opened_at,
            expires_at=self.expires_at(wall),
            seen=self.record,
        )

    # -- write results ---------------------------------------------------------------

    def on_election(
        self, write: Election, result: WriteResult | None, mono: float
    ) -> Admit | Reject:
        """Apply the result of the write that admits a probe (taking the lease, or
        renewing ours; ``None``: the store failed) and say whether the call runs: as the
        probe, as a closed call (failing open, or the circuit closed meanwhile), or not
        at all."""
        owner = write.owner
        self._free_probe_slot(owner)
        if result is None:
            return ADMIT_CLOSED  # fail open: the call runs as if the circuit were closed
        self.writes_seen += 1
        self._adopt(result.record if result.record is not None else CLOSED_RECORD, mono)
        if not result.won:
            if owner == self.lease_owner:
                self._drop_lease()  # our renewal lost: the lease is someone else's now
            if self.record.state in _ADMITTING:
                return ADMIT_CLOSED
            return self._reject(0.0)
        if isinstance(write, RenewProbe) and self.lease_owner is None:
            # A renewal answered after this process gave the lease up for lapsed (its
            # slot outlived it): the store says it holds the lease again.
            self.lease_owner = owner
            self.probe_successes = 0
        if isinstance(write, AcquireProbe):
            self.lease_owner = owner
            self.probe_successes = 0
            # An election is the fleet's OPEN -> HALF_OPEN; a takeover of a lapsed or
            # released lease is none, even when this process's stale view said OPEN.
            replaced = result.replaced if result.replaced is not None else write.seen.state
            if replaced is _OPEN:
                self._transition(_OPEN, _HALF_OPEN, self.record.opened_at)
        self._take_probe_slot(owner, mono)  # the probe now runs, under a fresh lease
        return Admit(owner)

    def on_write(self, write: Followup, result: WriteResult | None, mono: float) -> None:
        """Apply the result of a write that followed a call (``None``: the store
        failed; nothing is cached from it). Transitions this process made are appended
        to ``transitions``."""
        if result is None:
            self._on_write_failed(write)
            return
        self.writes_seen += 1
        self._adopt(result.record if result.record is not None else CLOSED_RECORD, mono)
        if isinstance(write, Trip):
            if result.won:
                self._transition(_CLOSED, _OPEN, self.record.opened_at)
            return
        # Every other write ends the probe that made it.
        owner = write.owner
        self._free_probe_slot(owner)
        if not result.won:
            if owner == self.lease_owner:
                self._drop_lease()  # fenced out: someone else holds the lease or moved on
        elif isinstance(write, Close):
            self._drop_lease()
            self.failures = 0
            self._transition(_HALF_OPEN, _CLOSED, None)
        elif isinstance(write, Reopen):
            self._drop_lease()
            self._transition(_HALF_OPEN, _OPEN, self.record.opened_at)
        else:
            self._drop_lease()  # released

    def _on_write_failed(self, write: Followup) -> None:
        if isinstance(write, Trip):
            return  # the streak was reset: the next full streak tries again
        owner = write.owner
        self._free_probe_slot(owner)
        if owner != self.lease_owner:
            return  # a probe whose lease this process no longer holds
        if isinstance(write, Close):
            self.probe_successes = self.success_threshold - 1  # the next success retries
        elif isinstance(write, Reopen):
            # Our lease stays in the store until it expires, then anyone takes over.
            self._drop_lease()
        # RELEASE: keep the lease; our next call probes under it while it lasts.

    def on_forced(self, record: CircuitRecord, mono: float) -> None:
        """Install the record an operator's forced write (or reset) just stored; a
        change of state is a transition this process made."""
        previous = self.record.state
        self._drop_lease()
        self._free_probe_slot(None)
        self.writes_seen += 1
        self._adopt(record, mono)
        if record.state is not previous:
            self._transition(previous, record.state, record.opened_at)

    def _transition(
        self, from_state: CircuitState, to_state: CircuitState, opened_at: int | None
    ) -> None:
        self.transitions.append(CircuitTransition(self.name, from_state, to_state, opened_at))
