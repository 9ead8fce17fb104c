"""One circuit's way to its store: timeouts, fail-open, and the memory of failure.

A store that is down, slow or returns garbage must never break a call, and must not be
hammered while it is down: every call of a busy service would otherwise pay a timeout
and log a traceback, against a store that is already struggling. So after an operation
fails (an error, a timeout, an answer that is not a circuit record) the gateway fails
open *without asking the store* for a back-off that starts at ``BACKOFF_INITIAL`` and
doubles with each failure up to ``BACKOFF_MAX``; the first answer after that ends it.

Logging is one warning, with the cause, when the store goes bad; a reminder every
``REMINDER_INTERVAL`` while it stays bad; one info line when it answers again. A
traceback comes only with the first warning, and only for an error a store does not
normally raise (a bug in a custom store, say).

The memory is per circuit: a corrupted record of one circuit must not make the others
on the same store fail open.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ._errors import CircuitBreakerPersistenceError, CircuitBreakerUnsupportedBackendError
from ._writes import StoreWrite
from .persistence._base import BlockingStoreOps, CircuitRecord, PersistenceStore, WriteResult

logger = logging.getLogger("aiocircuit")

# What an explicit operation answers: a record (force) or perhaps none (read).
R = TypeVar("R", CircuitRecord, CircuitRecord | None)

BACKOFF_INITIAL = 1.0
"""Seconds a circuit leaves its store alone after the first failed operation."""
BACKOFF_MAX = 30.0
"""The longest a circuit leaves its store alone between two attempts."""
REMINDER_INTERVAL = 60.0
"""Seconds between two warnings that a store is still failing."""

# What a store raises when it is down or slow: logged without a traceback.
_EXPECTED_ERRORS = (CircuitBreakerPersistenceError, TimeoutError, OSError)


class StoreFailed:
    """Marker for a read that failed, timed out or was skipped (the call fails open)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<store failed>"


STORE_FAILED = StoreFailed()


def check_record(record: object) -> None:
    """Refuse what a store returned for a read if it is not a record."""
    if record is not None and not isinstance(record, CircuitRecord):
        raise CircuitBreakerPersistenceError(
            f"store returned {type(record).__name__}, expected CircuitRecord or None"
        )


def check_write_result(result: object) -> None:
    """Refuse what a store returned for a write if it is not a ``WriteResult``."""
    if not isinstance(result, WriteResult):
        raise CircuitBreakerPersistenceError(
            f"store returned {type(result).__name__}, expected WriteResult"
        )


class StoreGateway:
    """Every store operation a circuit's calls make goes through here."""

    __slots__ = (
        "store",
        "circuit",
        "timeout",
        "_monotonic",
        "_retry_at",
        "_backoff",
        "_down_since",
        "_failed_open",
        "_next_reminder",
    )

    def __init__(
        self,
        store: PersistenceStore,
        circuit: str,
        *,
        timeout: float,
        monotonic: Callable[[], float],
    ) -> None:
        self.store = store
        self.circuit = circuit
        self.timeout = timeout
        self._monotonic = monotonic
        self._retry_at = -float("inf")
        self._backoff = 0.0
        self._down_since: float | None = None  # when the current outage began
        self._failed_open = 0  # operations failed or skipped in the current outage
        self._next_reminder = 0.0

    def forget(self) -> None:
        """Forget an outage seen by another process (after ``fork``)."""
        self._retry_at = -float("inf")
        self._down_since = None
        self._failed_open = 0

    def _skipped(self) -> bool:
        """Whether to skip an operation now (the store failed a moment ago); counts it."""
        if self._monotonic() < self._retry_at:
            self._failed_open += 1
            return True
        return False

    def describe(self, exc: BaseException) -> str:
        """A failed operation's cause, as a log line or an error's details say it."""
        if isinstance(exc, TimeoutError) and not str(exc):
            return f"no answer within store_timeout={self.timeout:g}s"
        return f"{type(exc).__name__}: {exc}"

    # -- async ---------------------------------------------------------------------

    async def read(self) -> CircuitRecord | StoreFailed | None:
        """The stored record, or ``STORE_FAILED``: fail open."""
        if self._skipped():
            return STORE_FAILED
        try:
            with anyio.fail_after(self.timeout):
                record = await self.store.read(self.circuit)
            check_record(record)
        except CircuitBreakerUnsupportedBackendError:
            raise  # a configuration mistake: failing open would hide it forever
        except Exception as exc:
            self.failed("read", exc)
            return STORE_FAILED
        self.answered()
        return record

    async def write(self, write: StoreWrite) -> WriteResult | None:
        """Make ``write``; its result, or ``None``: it failed, fail open."""
        if self._skipped():
            return None
        try:
            with anyio.fail_after(self.timeout):
                result = await write.apply(self.store, self.circuit)
            check_write_result(result)
        except CircuitBreakerUnsupportedBackendError:
            raise
        except Exception as exc:
            self.failed(write.kind.value, exc)
            return None
        self.answered()
        return result

    async def ask(self, what: str, operation: Callable[[], Awaitable[R]]) -> R:
        """An explicit operation (``info()``, ``force_open()``, ...): under
        ``store_timeout`` like the others, but it raises
        :class:`CircuitBreakerPersistenceError` (``what`` failed, and why) instead of
        failing open, and ignores the back-off: its caller asked about the store. Its
        answer ends an outage in progress."""
        try:
            with anyio.fail_after(self.timeout):
                record = await operation()
            check_record(record)
        except CircuitBreakerPersistenceError:
            raise
        except Exception as exc:
            raise CircuitBreakerPersistenceError(what, self.describe(exc)) from exc
        self.answered()
        return record

    # -- blocking (stores that answer without I/O) -----------------------------------

    def read_blocking(self, ops: BlockingStoreOps) -> CircuitRecord | StoreFailed | None:
        """:meth:`read` on a store's blocking twin."""
        if self._skipped():
            return STORE_FAILED
        try:
            record = ops.read(self.circuit)
            check_record(record)
        except Exception as exc:
            self.failed("read", exc)
            return STORE_FAILED
        self.answered()
        return record

    def write_blocking(self, ops: BlockingStoreOps, write: StoreWrite) -> WriteResult | None:
        """:meth:`write` on a store's blocking twin."""
        if self._skipped():
            return None
        try:
            result = write.apply(ops, self.circuit)
            check_write_result(result)
        except Exception as exc:
            self.failed(write.kind.value, exc)
            return None
        self.answered()
        return result

    # -- the memory of failure -------------------------------------------------------

    def failed(self, operation: str, exc: BaseException) -> None:
        """Count a failed operation: back off, and say so once per outage."""
        now = self._monotonic()
        self._failed_open += 1
        if self._down_since is None:
            self._down_since = now
            self._backoff = BACKOFF_INITIAL
            self._next_reminder = now + REMINDER_INTERVAL
            logger.warning(
                "circuit %r: store %s failed (%s); failing open: calls run as if the "
                "circuit were closed, and the store is left alone for %gs, then for "
                "twice as long after each further failure (at most %gs)",
                self.circuit,
                operation,
                self.describe(exc),
                self._backoff,
                BACKOFF_MAX,
                exc_info=not isinstance(exc, _EXPECTED_ERRORS),
            )
        else:
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            if now >= self._next_reminder:
                self._next_reminder = now + REMINDER_INTERVAL
                logger.warning(
                    "circuit %r: store still failing after %.0fs (%d operations failed "
                    "or skipped; the last, %s: %s); calls keep failing open",
                    self.circuit,
                    now - self._down_since,
                    self._failed_open,
                    operation,
                    self.describe(exc),
                )
        self._retry_at = now + self._backoff

    def answered(self) -> None:
        """Count an answered operation: an outage in progress is over."""
        if self._down_since is None:
            return
        logger.info(
            "circuit %r: store answering again after %.1fs; %d operations failed or were "
            "skipped meanwhile, their calls ran without the fleet's protection",
            self.circuit,
            self._monotonic() - self._down_since,
            self._failed_open,
        )
        self.forget()
