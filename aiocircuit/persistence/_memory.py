"""The embedded store: circuit records in this process's memory.

It is the default when a breaker is given no store. Several breakers sharing one
``InMemoryPersistence`` behave exactly like several processes sharing a fleet store,
because every operation is the same compare-and-set a remote store performs, made atomic
by one lock.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import replace

from .._circuit import CircuitState
from ._base import CircuitRecord, PersistenceStore, WriteResult


class _RecordTable:
    """The blocking core of the in-memory store.

    The sync shim calls it directly (no event loop, no portal: every operation completes
    at once); the async methods of ``InMemoryPersistence`` delegate to it.
    """

    __slots__ = ("_lock", "_records", "__weakref__")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, CircuitRecord] = {}
        _tables.add(self)

    def _forget_parent_lock(self) -> None:
        # In a forked child: a thread of the parent may have held the lock at the fork,
        # and it does not exist here to release it. The records are a plain copy, each
        # write being one dict assignment under the lock.
        self._lock = threading.Lock()

    def read(self, name: str) -> CircuitRecord | None:
        return self._records.get(name)

    def _write_if(self, name: str, condition: bool, record: CircuitRecord) -> WriteResult:
        # Callers evaluate `condition` and call this while holding the lock.
        if not condition:
            return WriteResult(False, self._records.get(name))
        self._records[name] = record
        return WriteResult(True, record)

    def trip(
        self,
        name: str,
        *,
        failure_count: int,
        opened_at: float,
        seen_opened_at: float | None,
        open_period: float,
        expires_at: int,
    ) -> WriteResult:
        with self._lock:
            current = self._records.get(name)
            condition = (
                current is None
                or current.state is CircuitState.CLOSED
                or (
                    current.state is CircuitState.OPEN
                    and seen_opened_at is not None
                    and current.opened_at == seen_opened_at
                )
            )
            new = CircuitRecord(
                CircuitState.OPEN, failure_count, opened_at, open_period=open_period
            )
            return self._write_if(name, condition, new)

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
    ) -> WriteResult:
        with self._lock:
            current = self._records.get(name)
            if current is None:
                return WriteResult(False, None)
            election = (
                current.state is CircuitState.OPEN
                and current.probe_owner is None
                and current.opened_at == seen_opened_at
            )
            takeover = (
                current.state is CircuitState.HALF_OPEN
                and current.lease_expiry is not None
                and current.lease_expiry <= now
                and (seen_owner is None or current.probe_owner == seen_owner)
            )
            new = replace(
                current,
                state=CircuitState.HALF_OPEN,
                failure_count=0,
                probe_owner=owner,
                lease_expiry=lease_expiry,
            )
            result = self._write_if(name, election or takeover, new)
            return replace(result, replaced=current.state) if result.won else result

    def _owned(self, name: str, owner: str) -> CircuitRecord | None:
        current = self._records.get(name)
        if current is None or current.probe_owner != owner:
            return None
        return current

    def renew_probe(
        self, name: str, *, owner: str, lease_expiry: float, expires_at: int
    ) -> WriteResult:
        with self._lock:
            current = self._owned(name, owner)
            if current is None:
                return WriteResult(False, self._records.get(name))
            return self._write_if(name, True, replace(current, lease_expiry=lease_expiry))

    def close(self, name: str, *, owner: str, expires_at: int) -> WriteResult:
        with self._lock:
            condition = self._owned(name, owner) is not None
            return self._write_if(name, condition, CircuitRecord(CircuitState.CLOSED))

    def reopen(
        self,
        name: str,
        *,
        owner: str,
        opened_at: float,
        open_period: float,
        reopen_count: int,
        expires_at: int,
    ) -> WriteResult:
        with self._lock:
            condition = self._owned(name, owner) is not None
            new = CircuitRecord(
                CircuitState.OPEN,
                0,
                opened_at,
                open_period=open_period,
                reopen_count=reopen_count,
            )
            return self._write_if(name, condition, new)

    def force(
        self,
        name: str,
        *,
        state: CircuitState,
        opened_at: float | None,
        expires_at: int | None,
    ) -> CircuitRecord:
        record = CircuitRecord(state, 0, opened_at)
        with self._lock:
            self._records[name] = record
        return record


# Every table of this process, so that a forked child can renew their locks.
_tables: weakref.WeakSet[_RecordTable] = weakref.WeakSet()


def _renew_locks_in_child() -> None:
    for table in list(_tables):
        table._forget_parent_lock()


os.register_at_fork(after_in_child=_renew_locks_in_child)


class InMemoryPersistence(PersistenceStore):
    """Circuit records in this process's memory, shared by every breaker given this
    store. Thread-safe; usable from any event loop and from the sync shim without a
    portal. Records do not expire."""

    def __init__(self) -> None:
        self._table = _RecordTable()

    def _blocking_ops(self) -> _RecordTable:
        return self._table

    async def read(self, name: str) -> CircuitRecord | None:
        return self._table.read(name)

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
        return self._table.trip(
            name,
            failure_count=failure_count,
            opened_at=opened_at,
            seen_opened_at=seen_opened_at,
            open_period=open_period,
            expires_at=expires_at,
        )

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
        return self._table.acquire_probe(
            name,
            owner=owner,
            seen_opened_at=seen_opened_at,
            now=now,
            lease_expiry=lease_expiry,
            expires_at=expires_at,
            seen_owner=seen_owner,
        )

    async def renew_probe(
        self, name: str, *, owner: str, lease_expiry: float, expires_at: int
    ) -> WriteResult:
        return self._table.renew_probe(
            name, owner=owner, lease_expiry=lease_expiry, expires_at=expires_at
        )

    async def close(self, name: str, *, owner: str, expires_at: int) -> WriteResult:
        return self._table.close(name, owner=owner, expires_at=expires_at)

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
        return self._table.reopen(
            name,
            owner=owner,
            opened_at=opened_at,
            open_period=open_period,
            reopen_count=reopen_count,
            expires_at=expires_at,
        )

    async def force(
        self,
        name: str,
        *,
        state: CircuitState,
        opened_at: float | None,
        expires_at: int | None,
    ) -> CircuitRecord:
        return self._table.force(name, state=state, opened_at=opened_at, expires_at=expires_at)
