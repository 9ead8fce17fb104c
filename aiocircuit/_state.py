"""The circuit state machine: plain data in, decisions out.

No I/O, no clock reads, no awaits. The drivers (async and sync) hand it the time and the
results of store operations and carry out what it decides, so the two call paths cannot
drift apart. Callers serialise access to one machine (the drivers hold a lock).

A process holds, per circuit: the last record it saw and until when it may trust it
(``fresh_until``, monotonic), its own consecutive-failure streak while closed, and, while
it probes, the lease it holds. Everything else is in the store.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._circuit import CircuitInfo, CircuitState, CircuitTransition
from .persistence._base import CLOSED_RECORD, CircuitRecord, WriteResult

# Stored records outlive their last write by this much beyond the recovery timeout, so a
# live circuit is never reaped mid-cycle and an abandoned one cleans itself up
# (Powertools' PERSISTED_STATE_TTL_BUFFER).
RECORD_TTL_BUFFER = 3600

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


class WriteKind(enum.Enum):
    """The conditional writes a circuit makes; values name the store method."""

    TRIP = "trip"
    ACQUIRE = "acquire_probe"
    RENEW = "renew_probe"
    RELEASE = "release_probe"  # made as a renewal to an expiry in the past
    CLOSE = "close"
    REOPEN = "reopen"


@dataclass(frozen=True, slots=True)
class StoreWrite:
    """Decision: make this conditional write, then report its result with
    :meth:`CircuitStateMachine.on_election` (a probe election) or ``on_write``.

    ``arguments`` are the keyword arguments of the store method named by
    ``operation``; ``seen`` is the record the decision was made on.
    """

    kind: WriteKind
    arguments: dict[str, Any]
    seen: CircuitRecord

    @property
    def operation(self) -> str:
        """The name of the store method that makes this write."""
        return "renew_probe" if self.kind is WriteKind.RELEASE else self.kind.value


Decision = Refresh | Admit | Reject | StoreWrite


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
        "probe_busy",
        "probe_successes",
        "transitions",
        "writes_seen",
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
        self.probe_busy = False  # a local probe is being elected, running or written
        self.probe_successes = 0
        self.transitions: deque[CircuitTransition] = deque()
        # Counts the write answers applied: a read that started before one of them
        # carries an older record and must not roll the view back.
        self.writes_seen = 0

    def forget_process_state(self) -> None:
        """Drop everything local (streak, lease, cache): this is now a new process."""
        self.record = CLOSED_RECORD
        self.fresh_until = -math.inf
        self.fast_deadline = -math.inf
        self.failures = 0
        self.lease_owner = None
        self.probe_busy = False
        self.probe_successes = 0
        self.transitions.clear()

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
        if mono >= self.fresh_until and not refreshed:
            return REFRESH
        record = self.record
        if record.state in _ADMITTING:
            return ADMIT_CLOSED
        if record.state is _FORCED_OPEN:
            # Never probes; a call may run once an operator lifts it, which this
            # process learns at its next read.
            return self._reject(max(0.0, self.fresh_until - mono))
        if self.probe_busy:
            return self._reject(0.0)
        if self.lease_owner is not None:
            if record.lease_expiry is not None and wall < record.lease_expiry:
                return self._renew(wall)
            self._drop_lease()  # our lease ran out: take it again like anyone else
        if record.state is _OPEN:
            opened_at = record.opened_at if record.opened_at is not None else int(wall)
            probe_at = opened_at + self.recovery_timeout
            if wall < probe_at:
                return self._reject(probe_at - wall)
            return self._acquire(opened_at, wall)
        if record.state is _HALF_OPEN:
            if record.lease_expiry is None:
                # A lease with no expiry can only be reaped by the record's TTL.
                return self._reject(self.recovery_timeout)
            if wall < record.lease_expiry:
                return self._reject(record.lease_expiry - wall)
            return self._acquire(record.opened_at or 0, wall)
        return self._reject(self.recovery_timeout)

    def _reject(self, retry_after: float) -> Reject:
        return Reject(self.record.info(self.name), retry_after)

    def _lease_expiry(self, wall: float) -> int:
        # Rounded up: a lease always runs at least recovery_timeout, so a probe that
        # starts under it is never taken over sooner than that.
        return math.ceil(wall + self.recovery_timeout)

    def _acquire(self, seen_opened_at: int, wall: float) -> StoreWrite:
        self.probe_busy = True
        arguments = {
            "owner": self.new_owner_id(),
            "seen_opened_at": seen_opened_at,
            "now": wall,
            "lease_expiry": self._lease_expiry(wall),
            "expires_at": self.expires_at(wall),
        }
        return StoreWrite(WriteKind.ACQUIRE, arguments, self.record)

    def _renew(self, wall: float) -> StoreWrite:
        # Each probe after the first renews the lease as it starts (the previous one
        # succeeded), so a running probe always has a full lease ahead of it.
        self.probe_busy = True
        arguments = {
            "owner": self.lease_owner,
            "lease_expiry": self._lease_expiry(wall),
            "expires_at": self.expires_at(wall),
        }
        return StoreWrite(WriteKind.RENEW, arguments, self.record)

    # -- outcomes --------------------------------------------------------------------

    def on_outcome(self, admitted: Admit, outcome: Outcome, wall: float) -> StoreWrite | None:
        """Record how an admitted call ended; return the write it calls for, if any."""
        owner = admitted.probe_owner
        if owner is None:
            return self._on_closed_outcome(outcome, wall)
        expires_at = self.expires_at(wall)
        if outcome is Outcome.FAILURE:
            arguments: dict[str, Any] = {
                "owner": owner,
                "opened_at": int(wall),
                "expires_at": expires_at,
            }
            return StoreWrite(WriteKind.REOPEN, arguments, self.record)
        if outcome is Outcome.IGNORED:
            arguments = {"owner": owner, "lease_expiry": 0, "expires_at": expires_at}
            return StoreWrite(WriteKind.RELEASE, arguments, self.record)
        self.probe_successes += 1
        if self.probe_successes >= self.success_threshold:
            arguments = {"owner": owner, "expires_at": expires_at}
            return StoreWrite(WriteKind.CLOSE, arguments, self.record)
        self.probe_busy = False  # the next call probes, renewing the lease as it starts
        return None

    def _on_closed_outcome(self, outcome: Outcome, wall: float) -> StoreWrite | None:
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
        arguments = {
            "failure_count": count,
            "opened_at": int(wall),
            "seen_opened_at": self.record.opened_at,
            "expires_at": self.expires_at(wall),
        }
        return StoreWrite(WriteKind.TRIP, arguments, self.record)

    # -- write results ---------------------------------------------------------------

    def on_election(
        self, write: StoreWrite, result: WriteResult | None, mono: float
    ) -> Admit | Reject:
        """Apply the result of the write that admits a probe (taking the lease, or
        renewing ours; ``None``: the store failed) and say whether the call runs: as the
        probe, as a closed call (failing open, or the circuit closed meanwhile), or not
        at all."""
        self.probe_busy = False
        if result is None:
            return ADMIT_CLOSED  # fail open: the call runs as if the circuit were closed
        self.writes_seen += 1
        self._adopt(result.record if result.record is not None else CLOSED_RECORD, mono)
        if not result.won:
            self._drop_lease()
            if self.record.state in _ADMITTING:
                return ADMIT_CLOSED
            return self._reject(0.0)
        owner: str = write.arguments["owner"]
        if write.kind is WriteKind.ACQUIRE:
            self.lease_owner = owner
            self.probe_successes = 0
            # An election is the fleet's OPEN -> HALF_OPEN; a takeover of a lapsed or
            # released lease is none, even when this process's stale view said OPEN.
            replaced = result.replaced if result.replaced is not None else write.seen.state
            if replaced is _OPEN:
                self._transition(_OPEN, _HALF_OPEN, self.record.opened_at)
        self.probe_busy = True  # the probe now runs
        return Admit(owner)

    def on_write(self, write: StoreWrite, result: WriteResult | None, mono: float) -> None:
        """Apply the result of a write that followed a call (``None``: the store
        failed; nothing is cached from it). Transitions this process made are appended
        to ``transitions``."""
        kind = write.kind
        if result is None:
            self._on_write_failed(kind)
            return
        self.writes_seen += 1
        self._adopt(result.record if result.record is not None else CLOSED_RECORD, mono)
        if kind is WriteKind.TRIP:
            if result.won:
                self._transition(_CLOSED, _OPEN, self.record.opened_at)
            return
        # Every other write ends the probe that made it.
        self.probe_busy = False
        if not result.won:
            self._drop_lease()  # fenced out: someone else holds the lease or moved on
        elif kind is WriteKind.CLOSE:
            self._drop_lease()
            self.failures = 0
            self._transition(_HALF_OPEN, _CLOSED, None)
        elif kind is WriteKind.REOPEN:
            self._drop_lease()
            self._transition(_HALF_OPEN, _OPEN, self.record.opened_at)
        elif kind is WriteKind.RELEASE:
            self._drop_lease()

    def _on_write_failed(self, kind: WriteKind) -> None:
        if kind is WriteKind.TRIP:
            return  # the streak was reset: the next full streak tries again
        self.probe_busy = False
        if kind is WriteKind.CLOSE:
            self.probe_successes = self.success_threshold - 1  # the next success retries
        elif kind is WriteKind.REOPEN:
            # Our lease stays in the store until it expires, then anyone takes over.
            self._drop_lease()
        # RELEASE: keep the lease; our next call probes under it while it lasts.

    def on_forced(self, record: CircuitRecord, mono: float) -> None:
        """Install the record an operator's forced write (or reset) just stored; a
        change of state is a transition this process made."""
        previous = self.record.state
        self._drop_lease()
        self.probe_busy = False
        self.writes_seen += 1
        self._adopt(record, mono)
        if record.state is not previous:
            self._transition(previous, record.state, record.opened_at)

    def _transition(
        self, from_state: CircuitState, to_state: CircuitState, opened_at: int | None
    ) -> None:
        self.transitions.append(CircuitTransition(self.name, from_state, to_state, opened_at))
