"""Every breaker the behaviour scenarios compare, behind one interface.

The stampede, the outage and the store-economics scenarios ask each breaker the same thing:
"here is a call to the downstream; make it or refuse it". :class:`Contender` is that
question, answered by aiocircuit or by a peer through its own public API, configured alike
(:class:`Settings`) and, where it can share state, on its own kind of shared store:

=========================  =====================  =======================================
breaker                    call path              shared store
=========================  =====================  =======================================
aiocircuit                 async                  DynamoDB (moto's server)
aws-lambda-powertools      sync, in a thread      DynamoDB (moto's server); no other store
purgatory                  async                  Redis (``redis.asyncio``)
aiobreaker                 async                  Redis (its storage calls the *sync* client)
pybreaker                  sync, in a thread      Redis
circuitbreaker             async                  none: state is per process
=========================  =====================  =======================================

Without shared stores (``shared=None``) each breaker keeps its state in memory, except
Powertools, whose only store is DynamoDB, so it always needs the moto server.

Whether a call reached the downstream is decided by whether the breaker invoked the
function it was given, never by which exception came back: pybreaker, for one, raises its
own error for the call that trips the circuit, although that call did reach the
downstream. Sync breakers run in worker threads, as a sync service would run them, so that
they can share one event loop's harness with the async ones.
"""

from __future__ import annotations

import abc
import enum
import importlib
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
import anyio.to_thread

from ._report import PEERS, missing

BREAKERS = ("aiocircuit", *PEERS)
NO_BREAKER = "no breaker"


class Unavailable(Exception):
    """This breaker cannot run here or in this scenario; the message says why."""


class DownstreamError(Exception):
    """The downstream failed the call (what every breaker must count as a failure)."""


class Outcome(enum.Enum):
    OK = "ok"  # reached the downstream, which answered
    FAILED = "failed"  # reached the downstream, which failed
    REJECTED = "rejected"  # refused by the breaker: the downstream never saw it


@dataclass(frozen=True, slots=True)
class Settings:
    """One configuration for every breaker. Whole seconds, because Powertools and the
    DynamoDB layout keep whole seconds."""

    failure_threshold: int = 5
    recovery_timeout: int = 2
    success_threshold: int = 1
    local_cache_max_age: float = 5.0


@dataclass(frozen=True, slots=True)
class SharedStores:
    """Where the breakers that share state keep it: a DynamoDB table (aiocircuit and
    Powertools) and a Redis server (purgatory, aiobreaker, pybreaker)."""

    dynamodb_url: str | None = None
    dynamodb_table: str | None = None
    redis_url: str | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """One downstream call in both forms: ``run`` awaited by async breakers, ``run_sync``
    called in a thread by sync ones. Both raise :class:`DownstreamError` on failure."""

    run: Callable[[], Awaitable[object]]
    run_sync: Callable[[], object]


class Contender(abc.ABC):
    """One breaker on one circuit in one environment."""

    name: str
    store: str  # where its state lives, for the report
    kind: str  # "async" or "sync"

    async def attempt(self, call: Call) -> Outcome:
        """Offer ``call`` to the breaker: made (ok or failed) or refused."""
        reached = False

        async def tracked() -> object:
            nonlocal reached
            reached = True
            return await call.run()

        def tracked_sync() -> object:
            nonlocal reached
            reached = True
            return call.run_sync()

        try:
            await self._call(tracked, tracked_sync)
        except Exception:
            return Outcome.FAILED if reached else Outcome.REJECTED
        return Outcome.OK if reached else Outcome.REJECTED

    @abc.abstractmethod
    async def _call(
        self, run: Callable[[], Awaitable[object]], run_sync: Callable[[], object]
    ) -> object:
        """Make the call through the breaker, letting its errors out."""

    async def warm(self) -> None:  # noqa: B027 - most contenders have nothing to open
        """Open the store client before timing, without touching the circuit's state."""

    async def aclose(self) -> None:  # noqa: B027 - most contenders hold nothing
        """Release clients and connections."""


class Threaded(Contender):
    """A sync breaker, run in a worker thread per call as a sync service would run it."""

    kind = "sync"
    limiter = anyio.CapacityLimiter(1_000)

    async def _call(
        self, run: Callable[[], Awaitable[object]], run_sync: Callable[[], object]
    ) -> object:
        return await anyio.to_thread.run_sync(self.call_sync, run_sync, limiter=self.limiter)

    @abc.abstractmethod
    def call_sync(self, run_sync: Callable[[], object]) -> object:
        """Make the call through the breaker on this thread (a sync service's worker)."""


class Unprotected(Contender):
    """No breaker: every call reaches the downstream (the baseline)."""

    name = NO_BREAKER
    store = "-"
    kind = "async"

    async def _call(
        self, run: Callable[[], Awaitable[object]], run_sync: Callable[[], object]
    ) -> object:
        return await run()


class _Aiocircuit(Contender):
    kind = "async"

    def __init__(self, breaker: Any, store: Any, where: str) -> None:
        self.name = "aiocircuit"
        self.store = where
        self._breaker = breaker
        self._store = store

    async def _call(
        self, run: Callable[[], Awaitable[object]], run_sync: Callable[[], object]
    ) -> object:
        return await self._breaker.call(run)

    async def warm(self) -> None:
        # The first request on a loop opens the client (botocore loads its model, ~90
        # ms); a read of another key leaves the circuit's cached view alone.
        await self._store.read(f"{self._breaker.name}-warm-up")

    async def aclose(self) -> None:
        await self._store.aclose()


async def _aiocircuit(circuit: str, settings: Settings, shared: SharedStores | None) -> Contender:
    from aiocircuit import CircuitBreaker, CircuitBreakerConfig
    from aiocircuit.persistence import InMemoryPersistence, PersistenceStore

    store: PersistenceStore
    if shared is None:
        store, where = InMemoryPersistence(), "memory"
    else:
        if shared.dynamodb_url is None or shared.dynamodb_table is None:
            raise Unavailable("no DynamoDB endpoint")
        from aiocircuit.persistence.dynamodb import DynamoDBPersistence

        store = DynamoDBPersistence(shared.dynamodb_table, endpoint_url=shared.dynamodb_url)
        where = "DynamoDB (moto)"
    config = CircuitBreakerConfig(
        failure_threshold=settings.failure_threshold,
        recovery_timeout=settings.recovery_timeout,
        success_threshold=settings.success_threshold,
        local_cache_max_age=settings.local_cache_max_age,
        store_timeout=10,  # one moto server thread serves a whole fleet here
    )
    return _Aiocircuit(CircuitBreaker(circuit, store, config=config), store, where)


class _Powertools(Threaded):
    def __init__(self, protected: Callable[..., object], client: Any) -> None:
        self.name = "aws-lambda-powertools"
        self.store = "DynamoDB (moto)"
        self._protected = protected
        self._client = client

    def call_sync(self, run_sync: Callable[[], object]) -> object:
        return self._protected(run_sync)

    async def aclose(self) -> None:
        self._client.close()


def _invoke(fn: Callable[[], object]) -> object:
    return fn()


async def _invoke_async(fn: Callable[[], Awaitable[object]]) -> object:
    return await fn()


async def _powertools(circuit: str, settings: Settings, shared: SharedStores | None) -> Contender:
    if shared is None or shared.dynamodb_url is None or shared.dynamodb_table is None:
        raise Unavailable("its only store is DynamoDB, and no DynamoDB endpoint was given")
    import boto3
    from aws_lambda_powertools.utilities import circuit_breaker as powertools
    from aws_lambda_powertools.utilities.circuit_breaker.persistence import (
        CircuitBreakerDynamoDBPersistence,
    )

    client = boto3.client("dynamodb", endpoint_url=shared.dynamodb_url)
    store = CircuitBreakerDynamoDBPersistence(table_name=shared.dynamodb_table, boto3_client=client)
    config = powertools.CircuitBreakerConfig(
        failure_threshold=settings.failure_threshold,
        recovery_timeout=settings.recovery_timeout,
        success_threshold=settings.success_threshold,
        local_cache_max_age=int(settings.local_cache_max_age),
    )
    protected = powertools.circuit_breaker(name=circuit, persistence_store=store, config=config)(
        _invoke
    )
    return _Powertools(protected, client)


class _Purgatory(Contender):
    kind = "async"

    def __init__(self, factory: Any, circuit: str, where: str) -> None:
        self.name = "purgatory"
        self.store = where
        self._factory = factory
        self._circuit = circuit

    async def _call(
        self, run: Callable[[], Awaitable[object]], run_sync: Callable[[], object]
    ) -> object:
        # Its context manager looks the breaker up in its repository each call, by design.
        async with await self._factory.get_breaker(self._circuit):
            return await run()


async def _purgatory(circuit: str, settings: Settings, shared: SharedStores | None) -> Contender:
    purgatory = importlib.import_module("purgatory")
    uow, where = None, "memory"
    if shared is not None:
        if shared.redis_url is None:
            raise Unavailable("no Redis server")
        uow, where = purgatory.AsyncRedisUnitOfWork(shared.redis_url), "Redis"
    factory = purgatory.AsyncCircuitBreakerFactory(
        default_threshold=settings.failure_threshold,
        default_ttl=settings.recovery_timeout,
        uow=uow,
    )
    await factory.initialize()
    return _Purgatory(factory, circuit, where)


class _Aiobreaker(Contender):
    kind = "async"

    def __init__(self, breaker: Any, where: str) -> None:
        self.name = "aiobreaker"
        self.store = where
        self._breaker = breaker

    async def _call(
        self, run: Callable[[], Awaitable[object]], run_sync: Callable[[], object]
    ) -> object:
        return await self._breaker.call_async(run)


async def _aiobreaker(circuit: str, settings: Settings, shared: SharedStores | None) -> Contender:
    aiobreaker = importlib.import_module("aiobreaker")
    storage, where = None, "memory"
    if shared is not None:
        if shared.redis_url is None:
            raise Unavailable("no Redis server")
        import redis

        redis_storage = importlib.import_module("aiobreaker.storage.redis")
        storage = redis_storage.CircuitRedisStorage(
            aiobreaker.CircuitBreakerState.CLOSED,
            redis.Redis.from_url(shared.redis_url),
            namespace=circuit,
        )
        where = "Redis (sync client)"
    breaker = aiobreaker.CircuitBreaker(
        fail_max=settings.failure_threshold,
        timeout_duration=timedelta(seconds=settings.recovery_timeout),
        state_storage=storage,
        name=circuit,
    )
    return _Aiobreaker(breaker, where)


class _Pybreaker(Threaded):
    def __init__(self, breaker: Any, where: str) -> None:
        self.name = "pybreaker"
        self.store = where
        self._breaker = breaker

    def call_sync(self, run_sync: Callable[[], object]) -> object:
        return self._breaker.call(run_sync)


async def _pybreaker(circuit: str, settings: Settings, shared: SharedStores | None) -> Contender:
    pybreaker = importlib.import_module("pybreaker")
    storage, where = None, "memory"
    if shared is not None:
        if shared.redis_url is None:
            raise Unavailable("no Redis server")
        import redis

        storage = pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, redis.Redis.from_url(shared.redis_url), namespace=circuit
        )
        where = "Redis"
    breaker = pybreaker.CircuitBreaker(
        fail_max=settings.failure_threshold,
        reset_timeout=settings.recovery_timeout,
        success_threshold=settings.success_threshold,
        state_storage=storage,
        name=circuit,
    )
    return _Pybreaker(breaker, where)


class _Circuitbreaker(Contender):
    kind = "async"

    def __init__(self, protected: Callable[..., Awaitable[object]]) -> None:
        self.name = "circuitbreaker"
        self.store = "memory (per process)"
        self._protected = protected

    async def _call(
        self, run: Callable[[], Awaitable[object]], run_sync: Callable[[], object]
    ) -> object:
        return await self._protected(run)


# circuitbreaker registers every breaker by name in a process-wide monitor.
_circuitbreaker_names = itertools.count()


async def _circuitbreaker(
    circuit: str, settings: Settings, shared: SharedStores | None
) -> Contender:
    circuitbreaker = importlib.import_module("circuitbreaker")
    # No shared store exists: with ``shared`` each environment still decides alone, which
    # is what a fleet running it gets, so it runs (and its numbers show that).
    protected = circuitbreaker.circuit(
        failure_threshold=settings.failure_threshold,
        recovery_timeout=settings.recovery_timeout,
        name=f"{circuit}-{next(_circuitbreaker_names)}",
    )(_invoke_async)
    return _Circuitbreaker(protected)


_FACTORIES: dict[str, Callable[[str, Settings, SharedStores | None], Awaitable[Contender]]] = {
    "aiocircuit": _aiocircuit,
    "aws-lambda-powertools": _powertools,
    "purgatory": _purgatory,
    "aiobreaker": _aiobreaker,
    "pybreaker": _pybreaker,
    "circuitbreaker": _circuitbreaker,
}
_DISTRIBUTIONS = {
    "aiocircuit": ("aiocircuit",),
    "aws-lambda-powertools": ("aws-lambda-powertools", "boto3"),
    "purgatory": ("purgatory",),
    "aiobreaker": ("aiobreaker",),
    "pybreaker": ("pybreaker",),
    "circuitbreaker": ("circuitbreaker",),
}
_SHARED_NEEDS = {"aiocircuit": ("aioboto3",), "purgatory": ("redis",)}
_SHARED_NEEDS |= {"aiobreaker": ("redis",), "pybreaker": ("redis",)}


async def build(
    breaker: str, circuit: str, settings: Settings, shared: SharedStores | None = None
) -> Contender:
    """``breaker`` (one of :data:`BREAKERS`) on ``circuit``, on the shared stores if
    given; raises :class:`Unavailable` with the reason when it cannot run."""
    if breaker not in _FACTORIES:
        raise ValueError(f"unknown breaker {breaker!r}; expected one of {BREAKERS}")
    needs = _DISTRIBUTIONS[breaker] + (_SHARED_NEEDS.get(breaker, ()) if shared else ())
    reason = missing(*needs)
    if reason is not None:
        raise Unavailable(reason)
    try:
        return await _FACTORIES[breaker](circuit, settings, shared)
    except Unavailable:
        raise
    except Exception as exc:  # a peer that breaks is reported, never fatal
        raise Unavailable(f"could not be set up: {type(exc).__name__}: {exc}") from exc


def downstream_call(url: str, async_client: Any, sync_client: Any, timeout: float = 10.0) -> Call:
    """A :class:`Call` of ``GET url`` through httpx clients: 200 is success, anything
    else (503 in an outage) or a transport error is a :class:`DownstreamError`."""

    async def run() -> object:
        try:
            response = await async_client.get(url, timeout=timeout)
        except Exception as exc:
            raise DownstreamError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise DownstreamError(f"HTTP {response.status_code}")
        return response.status_code

    def run_sync() -> object:
        try:
            response = sync_client.get(url, timeout=timeout)
        except Exception as exc:
            raise DownstreamError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise DownstreamError(f"HTTP {response.status_code}")
        return response.status_code

    return Call(run, run_sync)


__all__ = [
    "BREAKERS",
    "NO_BREAKER",
    "Call",
    "Contender",
    "DownstreamError",
    "Outcome",
    "Threaded",
    "Settings",
    "SharedStores",
    "Unavailable",
    "Unprotected",
    "build",
    "downstream_call",
]
