"""The contract every persistence backend implements.

A store holds one record per circuit and changes it only through atomic, named
compare-and-set operations: each write states the condition under which it applies and
reports whether it won, together with the record as stored afterwards. There is no
plain ``get`` then ``set``, so a stale process can never overwrite a newer state: it
loses the condition and adopts what is stored.

Fencing tokens: ``opened_at`` fences the trip and the probe election; the probe owner id
fences every write a probe makes (renew, close, reopen).

Timestamps are Unix seconds as floats, sub-second. A store gives back exactly the value
it was given: the fences compare them for equality. (The DynamoDB store also keeps
Powertools' whole-second attributes, so that both libraries share a table.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TypeVar

from .._circuit import CircuitInfo, CircuitState
from .._portal import run_blocking

if TYPE_CHECKING:
    from typing_extensions import Self

R_co = TypeVar("R_co", covariant=True)


@dataclass(frozen=True)
class CircuitRecord:
    """One circuit as stored: what every process in the fleet shares.

    ``probe_owner`` and ``lease_expiry`` are set only while a probe holds the lease
    (``HALF_OPEN``); ``opened_at`` only while the circuit is not ``CLOSED``.
    ``open_period`` is how many seconds the current open period lasts, as the process
    that tripped or reopened the circuit drew it (``None``: each reader's own
    ``recovery_timeout``, as for a record Powertools wrote); ``reopen_count`` counts the
    failed probes since the trip, which lengthen the open period.
    """

    state: CircuitState
    failure_count: int = 0
    opened_at: float | None = None
    probe_owner: str | None = None
    lease_expiry: float | None = None
    open_period: float | None = None
    reopen_count: int = 0

    def info(self, name: str) -> CircuitInfo:
        """The public snapshot of this record, as stored (``probe_at`` unset: placing it
        in time is the breaker's)."""
        return CircuitInfo(name, self.state, self.failure_count, self.opened_at)


CLOSED_RECORD = CircuitRecord(CircuitState.CLOSED)
"""What a missing record means: a closed circuit with no history."""


@dataclass(frozen=True)
class WriteResult:
    """The outcome of a conditional write.

    ``won`` says whether the condition held and the write applied; ``record`` is the
    circuit as stored after the operation (the new record when won, the one that made the
    condition fail when lost; ``None`` if no record exists). ``replaced`` is the state a
    won ``acquire_probe`` replaced: ``OPEN`` for an election, ``HALF_OPEN`` for a
    takeover, which is no transition (``None``: the store does not say).
    """

    won: bool
    record: CircuitRecord | None
    replaced: CircuitState | None = None


class StoreWrites(Protocol[R_co]):
    """The conditional writes, as a store has them (``R_co``: a coroutine of
    ``WriteResult``) and as its blocking twin has them (``R_co``: ``WriteResult``). The
    breaker's typed writes make themselves on either through this one shape."""

    def trip(
        self,
        name: str,
        *,
        failure_count: int,
        opened_at: float,
        seen_opened_at: float | None,
        open_period: float,
        expires_at: int,
    ) -> R_co: ...
    def acquire_probe(
        self,
        name: str,
        *,
        owner: str,
        seen_opened_at: float,
        now: float,
        lease_expiry: float,
        expires_at: int,
        seen_owner: str | None = None,
    ) -> R_co: ...
    def renew_probe(
        self, name: str, *, owner: str, lease_expiry: float, expires_at: int
    ) -> R_co: ...
    def close(self, name: str, *, owner: str, expires_at: int) -> R_co: ...
    def reopen(
        self,
        name: str,
        *,
        owner: str,
        opened_at: float,
        open_period: float,
        reopen_count: int,
        expires_at: int,
    ) -> R_co: ...


class BlockingStoreOps(StoreWrites[WriteResult], Protocol):
    """The operations of a store that completes them without waiting on I/O.

    The sync shim calls these directly instead of going through its event-loop portal.
    Same names and arguments as ``PersistenceStore``'s methods, minus ``async``.
    """

    def read(self, name: str) -> CircuitRecord | None: ...


class PersistenceStore(ABC):
    """Async base class of circuit state stores.

    Every method is one atomic operation on one circuit's record. Implementations raise
    :class:`~aiocircuit.CircuitBreakerPersistenceError` (chained from the backend's own
    error) for any failure of the store itself; a lost condition is not an error but a
    ``WriteResult`` with ``won=False``.

    ``expires_at`` on every write is the Unix second after which the record may be
    reaped (a DynamoDB TTL); stores without expiry ignore it.
    """

    @abstractmethod
    async def read(self, name: str) -> CircuitRecord | None:
        """The stored record of circuit ``name``, or ``None`` if there is none."""

    @abstractmethod
    async def trip(
        self,
        name: str,
        *,
        failure_count: int,
        opened_at: float,
        seen_opened_at: float | None,
        open_period: float,
        expires_at: int,
    ) -> WriteResult:
        """Store ``OPEN`` with ``opened_at``, ``failure_count`` and ``open_period``,
        ``reopen_count`` 0, clearing any probe lease.

        Applies only if the record is missing or ``CLOSED``, or ``OPEN`` with
        ``opened_at == seen_opened_at`` (when ``seen_opened_at`` is not ``None``).
        """

    @abstractmethod
    async def acquire_probe(
        self,
        name: str,
        *,
        owner: str,
        seen_opened_at: float,
        now: float,
        lease_expiry: float,
        expires_at: int,
        seen_owner: str | None = None,
    ) -> WriteResult:
        """Take the probe lease: store ``HALF_OPEN`` with ``owner`` and ``lease_expiry``
        and ``failure_count`` 0, keeping ``opened_at``, ``open_period`` and
        ``reopen_count``.

        Applies only if the record is ``OPEN`` with no owner and
        ``opened_at == seen_opened_at`` (the election), or ``HALF_OPEN`` with
        ``lease_expiry <= now`` and, when ``seen_owner`` is given, the lease still held
        by ``seen_owner`` (the takeover of a lease whose holder vanished: fenced on the
        holder seen, so two processes cannot both take over one lease). When won,
        ``replaced`` says which.
        """

    @abstractmethod
    async def renew_probe(
        self, name: str, *, owner: str, lease_expiry: float, expires_at: int
    ) -> WriteResult:
        """Set the lease's expiry to ``lease_expiry``, only if ``owner`` holds it.

        A probe holder renews its lease as each probe after the first starts, and
        releases it by renewing to an expiry in the past (0), which lets the next caller
        take it over at once.
        """

    @abstractmethod
    async def close(self, name: str, *, owner: str, expires_at: int) -> WriteResult:
        """Store ``CLOSED``, clearing ``opened_at``, ``open_period``, ``reopen_count``
        and the lease, only if ``owner`` holds the lease."""

    @abstractmethod
    async def reopen(
        self,
        name: str,
        *,
        owner: str,
        opened_at: float,
        open_period: float,
        reopen_count: int,
        expires_at: int,
    ) -> WriteResult:
        """Store ``OPEN`` with a fresh ``opened_at``, ``open_period`` and
        ``reopen_count``, clearing the lease, only if ``owner`` holds it."""

    @abstractmethod
    async def force(
        self,
        name: str,
        *,
        state: CircuitState,
        opened_at: float | None,
        expires_at: int | None,
    ) -> CircuitRecord:
        """Store ``state`` unconditionally, with ``opened_at``, failure count 0, no open
        period, ``reopen_count`` 0 and no lease; return the stored record.

        An operator's override (``force_open``, ``force_closed``, ``reset``): it applies
        whatever is stored. ``expires_at`` ``None`` means the record never expires (a
        forced state holds until reset).
        """

    def _blocking_ops(self) -> BlockingStoreOps | None:
        """A blocking twin of this store's operations for the sync shim, or ``None`` (the
        default) to run the async operations through the shim's event-loop portal."""
        return None

    async def open(self) -> None:  # noqa: B027  # optional hook: most stores hold nothing
        """Open the store's connections for the running event loop now, instead of on the
        first operation (in a Lambda function's init phase, say). ``async with store:``
        calls it. The default has nothing to open."""

    def open_sync(self) -> None:
        """The blocking twin of :meth:`open`, for code without an event loop: opens the
        store's connections on the loop where the sync shim runs async stores'
        operations, so that plain ``def`` handlers find them warm."""
        run_blocking(self.open)

    async def aclose(self) -> None:  # noqa: B027  # optional hook: most stores hold nothing
        """Release the store's connections. The default holds nothing to release."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
