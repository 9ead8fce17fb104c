"""Store wrappers for tests: count operations, inject faults, hold operations open.

They subclass ``PersistenceStore`` directly (not ``InMemoryPersistence``), so the sync
shim reaches them through its portal, exactly as it reaches a remote store.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio

from aiocircuit.persistence import (
    CircuitRecord,
    InMemoryPersistence,
    PersistenceStore,
    WriteResult,
)


class InstrumentedStore(PersistenceStore):
    """Delegates to an in-memory store; counts calls per operation; can fail or stall.

    ``fail`` holds operation names that raise ``ConnectionError``; ``stall`` holds those
    that never answer; ``gate``, when set, is awaited by every read (to hold reads open);
    ``late_answer``, when set, is awaited after a read has taken its record (an answer
    delayed in transit: it arrives carrying the record as it was).
    """

    def __init__(self, inner: InMemoryPersistence | None = None) -> None:
        self.inner = inner if inner is not None else InMemoryPersistence()
        self.calls: Counter[str] = Counter()
        self.fail: set[str] = set()
        self.stall: set[str] = set()
        self.gate: anyio.Event | None = None
        self.late_answer: anyio.Event | None = None
        self.closed = False

    @property
    def writes(self) -> int:
        return sum(n for op, n in self.calls.items() if op != "read")

    async def _enter(self, operation: str) -> None:
        self.calls[operation] += 1
        if operation in self.stall:
            await anyio.sleep_forever()
        if operation in self.fail:
            raise ConnectionError(f"store unreachable during {operation}")

    async def read(self, name: str) -> CircuitRecord | None:
        await self._enter("read")
        if self.gate is not None:
            await self.gate.wait()
        record = await self.inner.read(name)
        if self.late_answer is not None:
            await self.late_answer.wait()
        return record

    async def trip(self, name: str, **kwargs: Any) -> WriteResult:
        await self._enter("trip")
        return await self.inner.trip(name, **kwargs)

    async def acquire_probe(self, name: str, **kwargs: Any) -> WriteResult:
        await self._enter("acquire_probe")
        return await self.inner.acquire_probe(name, **kwargs)

    async def renew_probe(self, name: str, **kwargs: Any) -> WriteResult:
        await self._enter("renew_probe")
        return await self.inner.renew_probe(name, **kwargs)

    async def close(self, name: str, **kwargs: Any) -> WriteResult:
        await self._enter("close")
        return await self.inner.close(name, **kwargs)

    async def reopen(self, name: str, **kwargs: Any) -> WriteResult:
        await self._enter("reopen")
        return await self.inner.reopen(name, **kwargs)

    async def force(self, name: str, **kwargs: Any) -> CircuitRecord:
        await self._enter("force")
        return await self.inner.force(name, **kwargs)

    async def aclose(self) -> None:
        self.closed = True
