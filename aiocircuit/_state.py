"""The circuit state machine: plain data in, decisions out.

No I/O, no clock reads, no awaits. The drivers (async and sync) hand it the time and the
results of store operations and carry out what it decides, so the two call paths cannot
drift apart. Callers serialise access to one machine (the drivers hold a lock).

A process holds, per circuit: the last record it saw and until when it may trust it
(``fresh_until``, monotonic), its own counts while closed (the consecutive-failure
streak, and the failure-rate window when that rule is on), and, while it probes, the
lease it holds. Everything else is in the store.

Open periods: a trip opens the circuit for ``recovery_timeout``; each failed probe
multiplies the next period by ``recovery_backoff`` (up to ``max_recovery_timeout``);
``recovery_jitter`` spreads each period around its nominal length. The process that
trips or reopens draws the period once and stores it, so the fleet waits one period.

Clocks: the store's timestamps are Unix seconds, written by many hosts. This process
reads them once, when a record arrives, and turns them into local monotonic deadlines
(when the open period ends, when a lease lapses), clamped to what the configuration
makes possible. A wall-clock step in this process after that moves nothing, and a stored
value that is absurd (milliseconds, 1e125, negative) cannot keep a circuit rejecting
for longer than the configuration allows.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ._circuit import CircuitInfo, CircuitState, CircuitTransition
from ._window import FailureWindow
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

logger = logging.getLogger("aiocircuit")

# Stored records outlive their last write by this much beyond the recovery timeout, so a
# live circuit is never reaped mid-cycle and an abandoned one cleans itself up
# (Powertools' PERSISTED_STATE_TTL_BUFFER).
RECORD_TTL_BUFFER = 3600

# A change of more than this in Unix time minus monotonic time is a step of the wall
# clock (an operator, a VM resumed, NTP stepping), not the slow slew NTP applies.
WALL_CLOCK_STEP = 1.0

# A wait read from the store may run this much past what the configuration allows from
# when it was seen: Powertools' whole-second rounding, and clock error between hosts.
CLOCK_SLACK = 2.0

# A probe lease lasts at least this long, however short the open period: a probe is a
# real call, and a lease that lapses under it lets a second probe in.
MIN_LEASE = 1.0

# "No cap" on a growing open period still means a finite one: about 31 years.
UNCAPPED_PERIOD = 1e9

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
    for an ordinary call on a closed circuit. ``shadowed`` is set in shadow mode
    (``enforce=False``) for a call that runs although the circuit would reject it: the
    rejection it stands for. Its outcome counts for nothing."""

    probe_owner: str | None = None
    shadowed: Reject | None = None


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
        "recovery_backoff",
        "max_recovery_timeout",
        "recovery_jitter",
        "enforce",
        "window",
        "slow_call_duration",
        "tally",
        "lease_length",
        "uniform",
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
        "_longest_period",
        "_wall_offset",
        "_pin_offset",
        "_deadline_key",
        "_deadline",
    )

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int | None,
        success_threshold: int,
        recovery_timeout: float,
        cache_max_age: float,
        new_owner_id: Callable[[], str],
        fast_path_enabled: bool = True,
        failure_rate_threshold: float | None = None,
        sliding_window: float = 60.0,
        minimum_calls: int = 20,
        slow_call_duration: float | None = None,
        recovery_backoff: float = 1.0,
        max_recovery_timeout: float | None = None,
        recovery_jitter: float = 0.0,
        enforce: bool = True,
        call_timeout: float | None = None,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.recovery_timeout = recovery_timeout
        self.recovery_backoff = recovery_backoff
        self.max_recovery_timeout = max_recovery_timeout
        self.recovery_jitter = recovery_jitter
        self.enforce = enforce
        self.uniform = uniform  # draws a jittered period; injectable for tests
        self.window = (
            None
            if failure_rate_threshold is None
            else FailureWindow(sliding_window, failure_rate_threshold, minimum_calls)
        )
        self.slow_call_duration = slow_call_duration
        # What the closed fast path calls, with the time the call started, on a
        # success that needs more than resetting the streak: True, it counted it (the
        # caller then resets the streak); False, it must go through on_outcome. The
        # window's own count, unless the driver replaces it to time slow calls.
        self.tally: Callable[[float], bool] | None = (
            None if self.window is None else self.window.count_success
        )
        self.lease_length = max(recovery_timeout, MIN_LEASE, call_timeout or 0.0)
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
        # The longest open period this configuration can draw: a stored one longer than
        # that (a wrong unit, a corrupted item) is cut to it.
        if max_recovery_timeout is not None:
            self._longest_period = max_recovery_timeout
        elif recovery_backoff == 1:
            self._longest_period = recovery_timeout * (1 + recovery_jitter)
        else:
            self._longest_period = UNCAPPED_PERIOD
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
        if self.window is not None:
            self.window.clear()
        self.lease_owner = None
        self._free_probe_slot(None)
        self.probe_successes = 0
        self.transitions.clear()
        self._deadline_key = None

    # -- reading ---------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        return self.record.state

    def info(self, mono: float | None = None, wall: float | None = None) -> CircuitInfo:
        """The public snapshot of the cached record, with its open period and, when
        ``mono`` and ``wall`` say when it is asked, when a probe may start."""
        record = self.record
        if record.state is not _OPEN and record.state is not _HALF_OPEN:
            return record.info(self.name)
        probe_at = None
        if record.state is _OPEN and mono is not None and wall is not None:
            if self._deadline_key is None:
                self._pin_deadline(mono, wall)
            probe_at = self._deadline
        return CircuitInfo(
            self.name,
            record.state,
            record.failure_count,
            record.opened_at,
            self._open_period(record),
            probe_at,
        )

    def _open_period(self, record: CircuitRecord) -> float:
        """The stored record's open period, as this configuration can have drawn it: an
        absent one (Powertools wrote the record) is ``recovery_timeout``, an impossible
        one (not a positive number) too, and one longer than the longest this
        configuration can draw is cut to that."""
        period = record.open_period
        if period is None or not 0 < period < math.inf:
            return self.recovery_timeout
        return min(period, self._longest_period)

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
            # Another environment finished a recovery cycle: partial counts from before
            # it are stale.
            self.failures = 0
            if self.window is not None:
                self.window.clear()
        if self.lease_owner is not None and record.probe_owner != self.lease_owner:
            self._drop_lease()
        self._update_fast_deadline()
        if self._wall_offset is not None:
            self._pin_deadline(mono, mono + self._wall_offset)

    def _pin_deadline(self, mono: float, wall: float) -> None:
        """Place the cached record's open period or lease on this process's clocks, once
        per stored value: reading the same record again keeps the deadline it had."""
        record = self.record
        key = (
            record.state,
            record.opened_at,
            record.open_period,
            record.probe_owner,
            record.lease_expiry,
        )
        if key == self._deadline_key:
            return
        self._deadline_key = key
        self._pin_offset = wall - mono
        # Clamped to what the configuration makes possible: a stored time in the
        # future, from a host whose clock is far ahead or a value in the wrong unit,
        # cannot make a wait longer than the period (or lease) plus CLOCK_SLACK.
        if record.state is _OPEN:
            period = self._open_period(record)
            opened_at = wall if record.opened_at is None else record.opened_at
            self._deadline = min(opened_at + period, wall + period + CLOCK_SLACK)
        elif record.state is _HALF_OPEN and record.lease_expiry is not None:
            self._deadline = min(record.lease_expiry, wall + self.lease_length + CLOCK_SLACK)
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

    def expires_at(self, wall: float, period: float | None = None) -> int:
        """When a record written at ``wall``, open for ``period`` (or nothing longer
        than a lease), may be reaped (its TTL)."""
        longest = self.lease_length if period is None else max(period, self.lease_length)
        return int(wall + longest) + RECORD_TTL_BUFFER

    def draw_open_period(self, reopen_count: int) -> float:
        """The open period after ``reopen_count`` failed probes since the trip: its
        nominal length grown by the backoff and capped, then jittered once."""
        try:
            nominal = self.recovery_timeout * self.recovery_backoff**reopen_count
        except OverflowError:
            nominal = math.inf
        nominal = min(nominal, self._longest_period)
        jitter = self.recovery_jitter
        if jitter:
            nominal *= self.uniform(1 - jitter, 1 + jitter)
        return min(nominal, self._longest_period)

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
            return self._reject(self.recovery_timeout, mono, wall)
        if mono < self.probe_slot_until:
            return self._reject(0.0, mono, wall)
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
                return self._reject(deadline - now, mono, wall)
            seen = record.opened_at if record.opened_at is not None else wall
            return self._acquire(seen, wall, mono, wall)
        if record.state is _HALF_OPEN:
            if record.lease_expiry is None:
                # A lease with no expiry can only be reaped by the record's TTL.
                return self._reject(self.recovery_timeout, mono, wall)
            if now < deadline:
                return self._reject(deadline - now, mono, wall)
            # The lease lapsed by this process's clock. The takeover is fenced on the
            # holder and the expiry seen: it applies to that lease, never to one taken
            # since, whatever this host's wall clock says.
            return self._acquire(record.opened_at or 0, record.lease_expiry, mono, wall)
        return self._reject(self.recovery_timeout, mono, wall)

    def _reject(
        self, retry_after: float, mono: float | None = None, wall: float | None = None
    ) -> Admit | Reject:
        reject = Reject(self.info(mono, wall), retry_after)
        if self.enforce:
            return reject
        # Shadow mode: the call runs, uncounted, and says what would have happened.
        logger.debug(
            "circuit %r: would_reject (%s; shadow mode, enforce=False)",
            self.name,
            reject.circuit.state.value,
        )
        return Admit(None, reject)

    def _lease_expiry(self, wall: float) -> float:
        return wall + self.lease_length

    def _take_probe_slot(self, owner: str, mono: float) -> None:
        # As long as the lease this probe is elected for: past that, the lease has
        # lapsed in the store as well.
        self.probe_slot_until = mono + self.lease_length
        self.probe_slot_owner = owner

    def _free_probe_slot(self, owner: str | None) -> None:
        """The probe (or election) under ``owner`` is over: free the slot if it is the
        one holding it (``None``: whoever holds it). One whose slot outlived its lease
        and was taken by a newer probe must not free the newer one's."""
        if owner is None or owner == self.probe_slot_owner:
            self.probe_slot_until = -math.inf
            self.probe_slot_owner = None

    def _acquire(self, seen_opened_at: float, now: float, mono: float, wall: float) -> AcquireProbe:
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

    def on_outcome(
        self, admitted: Admit, outcome: Outcome, mono: float, wall: float
    ) -> Followup | None:
        """Record how an admitted call ended at ``mono`` / ``wall``; return the write it
        calls for, if any."""
        owner = admitted.probe_owner
        if owner is None:
            if admitted.shadowed is not None:
                return None  # shadow mode: a call the circuit would have rejected
            return self._on_closed_outcome(outcome, mono, wall)
        expires_at = self.expires_at(wall)
        if outcome is Outcome.FAILURE:
            count = self.record.reopen_count + 1
            period = self.draw_open_period(count)
            return Reopen(owner, wall, period, count, self.expires_at(wall, period), self.record)
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

    def closed_success(self, started: float, ended: float) -> bool:
        """The tally when slow calls count, for a call that ran from ``started`` to
        ``ended``: False for a slow one (it must go through :meth:`on_outcome`), else
        the window's count."""
        slow = self.slow_call_duration
        if slow is not None and ended - started > slow:
            return False
        window = self.window
        return window is None or window.count_success(started)

    def _on_closed_outcome(self, outcome: Outcome, mono: float, wall: float) -> Trip | None:
        if self.record.state is not _CLOSED:
            return None  # admitted before the circuit left CLOSED: nothing to count
        if outcome is Outcome.IGNORED:
            return None
        window = self.window
        failed = outcome is Outcome.FAILURE
        rate_trips = window is not None and window.record(mono, failed=failed)
        if not failed:
            self.failures = 0
            if not rate_trips:
                return None
        else:
            self.failures += 1
        threshold = self.failure_threshold
        streak_trips = failed and threshold is not None and self.failures >= threshold
        if not (rate_trips or streak_trips):
            return None
        assert window is not None or streak_trips
        count = window.failures if rate_trips and window is not None else self.failures
        # Reset before the write, so exactly one of many concurrent failures trips.
        self.failures = 0
        if window is not None:
            window.clear()
        period = self.draw_open_period(0)
        return Trip(
            failure_count=count,
            opened_at=wall,
            seen_opened_at=self.record.opened_at,
            open_period=period,
            expires_at=self.expires_at(wall, period),
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
            if self.window is not None:
                self.window.clear()
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
        self, from_state: CircuitState, to_state: CircuitState, opened_at: float | None
    ) -> None:
        self.transitions.append(CircuitTransition(self.name, from_state, to_state, opened_at))
