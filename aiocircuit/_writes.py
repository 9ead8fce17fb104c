"""The conditional writes a circuit makes, one small value per kind.

The state machine decides a write; the store gateway makes it. What crosses between
them is one of these frozen values, which knows the store operation that carries it
out, so every argument is typed end to end and nothing is looked up by name. Each also
carries ``seen``, the record the decision was made on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from .persistence._base import CircuitRecord, StoreWrites

R = TypeVar("R")


class WriteKind(enum.Enum):
    """The kinds of write; values name them in log lines and metrics."""

    TRIP = "trip"
    ACQUIRE = "acquire_probe"
    RENEW = "renew_probe"
    RELEASE = "release_probe"  # made as a renewal to an expiry in the past
    CLOSE = "close"
    REOPEN = "reopen"


class StoreWrite:
    """Base of the writes: ``apply`` makes one on a store (returning the coroutine of
    its operation) or on a store's blocking twin (returning its result)."""

    __slots__ = ()
    kind: ClassVar[WriteKind]
    seen: CircuitRecord

    def apply(self, writes: StoreWrites[R], name: str) -> R:
        """Make this write on circuit ``name`` through ``writes``."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Trip(StoreWrite):
    """Open a closed circuit (or one still open since ``seen_opened_at``) for
    ``open_period`` seconds."""

    failure_count: int
    opened_at: float
    seen_opened_at: float | None
    open_period: float
    expires_at: int
    seen: CircuitRecord
    kind: ClassVar[WriteKind] = WriteKind.TRIP

    def apply(self, writes: StoreWrites[R], name: str) -> R:
        return writes.trip(
            name,
            failure_count=self.failure_count,
            opened_at=self.opened_at,
            seen_opened_at=self.seen_opened_at,
            open_period=self.open_period,
            expires_at=self.expires_at,
        )


@dataclass(frozen=True, slots=True)
class AcquireProbe(StoreWrite):
    """Take the probe lease: the election (OPEN since ``seen_opened_at``) or the
    takeover of a lease that lapsed at or before ``now``, still held by ``seen_owner``."""

    owner: str
    seen_opened_at: float
    now: float
    lease_expiry: float
    expires_at: int
    seen: CircuitRecord
    seen_owner: str | None = None
    kind: ClassVar[WriteKind] = WriteKind.ACQUIRE

    def apply(self, writes: StoreWrites[R], name: str) -> R:
        return writes.acquire_probe(
            name,
            owner=self.owner,
            seen_opened_at=self.seen_opened_at,
            now=self.now,
            lease_expiry=self.lease_expiry,
            expires_at=self.expires_at,
            seen_owner=self.seen_owner,
        )


@dataclass(frozen=True, slots=True)
class RenewProbe(StoreWrite):
    """Extend the lease ``owner`` holds to ``lease_expiry`` (a release is a renewal to
    an expiry in the past: :class:`ReleaseProbe`)."""

    owner: str
    lease_expiry: float
    expires_at: int
    seen: CircuitRecord
    kind: ClassVar[WriteKind] = WriteKind.RENEW

    def apply(self, writes: StoreWrites[R], name: str) -> R:
        return writes.renew_probe(
            name, owner=self.owner, lease_expiry=self.lease_expiry, expires_at=self.expires_at
        )


@dataclass(frozen=True, slots=True)
class ReleaseProbe(StoreWrite):
    """Give the lease ``owner`` holds back at once: a renewal to expiry 0, which lets
    the next caller anywhere take it over."""

    owner: str
    expires_at: int
    seen: CircuitRecord
    kind: ClassVar[WriteKind] = WriteKind.RELEASE
    lease_expiry: ClassVar[float] = 0.0

    def apply(self, writes: StoreWrites[R], name: str) -> R:
        return writes.renew_probe(
            name, owner=self.owner, lease_expiry=0.0, expires_at=self.expires_at
        )


@dataclass(frozen=True, slots=True)
class Close(StoreWrite):
    """Close the circuit, if ``owner`` holds the lease."""

    owner: str
    expires_at: int
    seen: CircuitRecord
    kind: ClassVar[WriteKind] = WriteKind.CLOSE

    def apply(self, writes: StoreWrites[R], name: str) -> R:
        return writes.close(name, owner=self.owner, expires_at=self.expires_at)


@dataclass(frozen=True, slots=True)
class Reopen(StoreWrite):
    """Open the circuit again from ``opened_at`` for ``open_period`` seconds, the
    ``reopen_count``-th failed probe since the trip, if ``owner`` holds the lease."""

    owner: str
    opened_at: float
    open_period: float
    reopen_count: int
    expires_at: int
    seen: CircuitRecord
    kind: ClassVar[WriteKind] = WriteKind.REOPEN

    def apply(self, writes: StoreWrites[R], name: str) -> R:
        return writes.reopen(
            name,
            owner=self.owner,
            opened_at=self.opened_at,
            open_period=self.open_period,
            reopen_count=self.reopen_count,
            expires_at=self.expires_at,
        )


Election = AcquireProbe | RenewProbe
"""A write that admits a probe."""

ProbeEnd = Close | Reopen | ReleaseProbe
"""A write that ends a probe."""

Followup = Trip | ProbeEnd
"""A write that follows a finished call."""
