"""The breaker on DynamoDB, end to end against moto's server on loopback: store traffic
counted at the server, several environments on one table, a store that is down, slow
or holds garbage, trio, fresh event loops per invocation, the sync shim, and the item
layout Powertools shares."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import math
import os
import re
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from aiocircuit import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerConfigError,
    CircuitBreakerOpenError,
    CircuitBreakerPersistenceError,
    CircuitBreakerUnsupportedBackendError,
    CircuitInfo,
    CircuitState,
)
from aiocircuit._gateway import BACKOFF_MAX
from aiocircuit._portal import run_blocking
from aiocircuit.persistence.dynamodb import DynamoDBPersistence
from aiocircuit.testing import FakeClock

if TYPE_CHECKING:
    from ..moto_server import CountingEndpoint
    from .conftest import SlowProxy, TableFactory, TrackingSession

pytestmark = pytest.mark.anyio

THRESHOLD = 2
CONFIG = CircuitBreakerConfig(
    failure_threshold=THRESHOLD, success_threshold=1, recovery_timeout=10, local_cache_max_age=5
)
WALL_START = 1_800_000_000  # FakeClock's default Unix time


class Downstream:
    """An async downstream that returns its argument or raises ``error``, counting its
    calls and when the last one started and ended (real monotonic time)."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: BaseException | None = None
        self.started = 0.0
        self.finished = 0.0

    async def __call__(self, value: Any = "ok") -> Any:
        self.calls += 1
        self.started = time.monotonic()
        try:
            await anyio.lowlevel.checkpoint()  # as real I/O would have
            if self.error is not None:
                raise self.error
            return value
        finally:
            self.finished = time.monotonic()


async def echo(value: Any) -> Any:
    return value


async def down(message: str = "downstream down") -> None:
    raise ConnectionError(message)


def store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "aiocircuit" and r.levelno == logging.WARNING
    ]


def outage_warnings(messages: list[str]) -> list[str]:
    """The warnings that start an outage, without the reminders that it goes on."""
    return [m for m in messages if "still failing" not in m]


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: float) -> dict[str, str]:
    return {"N": format(Decimal(repr(value)).normalize(), "f")}


def normalized(item: dict[str, Any]) -> dict[str, Any]:
    """An item with its numbers written as DynamoDB normalises them (no trailing
    zeros; moto keeps them as sent)."""
    return {
        k: {"N": format(Decimal(v["N"]).normalize(), "f")} if "N" in v else v
        for k, v in item.items()
    }


# -- a healthy circuit costs no store traffic ------------------------------------------


async def test_healthy_calls_write_nothing_and_read_once_per_cache_age(
    moto: CountingEndpoint, table: str, clock: FakeClock
) -> None:
    """10,000 healthy calls over 10 simulated seconds: no write reaches the server and
    GetItem is bounded by one per local_cache_max_age (at most ceil(10/5)+1)."""
    config = CircuitBreakerConfig(local_cache_max_age=5)
    async with DynamoDBPersistence(table, endpoint_url=moto.url) as store:
        breaker = CircuitBreaker("payments", store, config=config, clock=clock)
        for i in range(10_000):
            assert await breaker.call(echo, i) == i
            clock.advance(0.001)
    reads = moto.counts["GetItem"]
    assert moto.counts == {"GetItem": reads}  # no UpdateItem, no PutItem, nothing else
    assert 2 <= reads <= math.ceil(10 / 5) + 1


async def test_concurrent_tasks_share_one_read_per_refresh(
    moto: CountingEndpoint, table: str, clock: FakeClock
) -> None:
    """1,000 tasks calling one breaker at once on a stale cache cause one GetItem per
    refresh between them, and each task gets its own result."""
    async with DynamoDBPersistence(table, endpoint_url=moto.url) as store:
        breaker = CircuitBreaker("payments", store, config=CONFIG, clock=clock)
        downstream = Downstream()
        results: dict[int, Any] = {}

        async def one(i: int) -> None:
            results[i] = await breaker.call(downstream, i)

        for refresh in (1, 2, 3):
            results.clear()
            async with anyio.create_task_group() as tg:
                for i in range(1_000):
                    tg.start_soon(one, i)
            assert results == {i: i for i in range(1_000)}
            assert moto.counts == {"GetItem": refresh}
            clock.advance(CONFIG.local_cache_max_age)
    assert downstream.calls == 3_000


# -- a fleet shares one circuit ----------------------------------------------------------


async def test_trip_in_one_environment_rejects_in_another_within_cache_age(
    moto: CountingEndpoint, table: str, clock: FakeClock
) -> None:
    """Two environments (two stores, two breakers, one table): once the first trips, the
    second, whose cache said CLOSED, rejects within local_cache_max_age without running
    its call."""
    async with (
        DynamoDBPersistence(table, endpoint_url=moto.url) as store_a,
        DynamoDBPersistence(table, endpoint_url=moto.url) as store_b,
    ):
        env_a = CircuitBreaker("partner", store_a, config=CONFIG, clock=clock)
        env_b = CircuitBreaker("partner", store_b, config=CONFIG, clock=clock)
        assert await env_b.call(echo, "warm") == "warm"  # env_b caches CLOSED for 5 s
        for _ in range(THRESHOLD):
            with pytest.raises(ConnectionError):
                await env_a.call(down)
        assert moto.counts["UpdateItem"] == 1
        assert env_a.state is CircuitState.OPEN

        clock.advance(CONFIG.local_cache_max_age)
        downstream = Downstream()
        with pytest.raises(CircuitBreakerOpenError) as caught:
            await env_b.call(downstream)
    assert downstream.calls == 0
    assert caught.value.circuit == CircuitInfo(
        "partner", CircuitState.OPEN, 2, WALL_START, 10.0, WALL_START + 10
    )
    assert caught.value.retry_after == pytest.approx(
        CONFIG.recovery_timeout - CONFIG.local_cache_max_age
    )


# -- fail open -----------------------------------------------------------------------


async def test_store_down_fails_open_then_store_is_used_again(
    moto: CountingEndpoint, table: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Server stopped mid-run: every call runs and returns its own result (or raises its
    own exception), no store operation holds a call up beyond store_timeout, one warning
    is logged for the outage and the store is left alone between attempts; once the
    server is back (and the back-off has passed) the breaker reads and trips through it
    again."""
    store_timeout = 0.5
    bound = store_timeout + 1.0  # botocore retries refused connections: the timeout cuts in
    config = CONFIG.model_copy(update={"local_cache_max_age": 1, "store_timeout": store_timeout})
    downstream = Downstream()
    async with DynamoDBPersistence(table, endpoint_url=moto.url) as store:
        breaker = CircuitBreaker("payments", store, config=config, clock=clock)
        assert await breaker.call(echo, "warm") == "warm"
        moto.stop()
        try:
            with caplog.at_level(logging.WARNING, logger="aiocircuit"):
                for i in range(3):
                    clock.advance(1)
                    called = time.monotonic()
                    assert await breaker.call(downstream, i) == i
                    assert downstream.started - called < bound
                    assert time.monotonic() - downstream.finished < bound
                downstream.error = ConnectionError("downstream down, store down")
                for _ in range(THRESHOLD):  # the last one tries to trip
                    called = time.monotonic()
                    with pytest.raises(ConnectionError, match="downstream down, store down"):
                        await breaker.call(downstream)
                    assert downstream.started - called < bound
                    assert time.monotonic() - downstream.finished < bound
                downstream.error = None
        finally:
            moto.start()
        assert downstream.calls == 5
        messages = store_warnings(caplog)
        assert len(messages) == 1, messages  # one warning per outage, not one per call
        assert "store read failed" in messages[0]
        assert "failing open" in messages[0]
        assert breaker.state is CircuitState.CLOSED  # nothing from the outage was cached

        moto.reset_counts()
        clock.advance(BACKOFF_MAX)
        with caplog.at_level(logging.INFO, logger="aiocircuit"):
            assert await breaker.call(echo, "back") == "back"
        assert any("answering again" in r.getMessage() for r in caplog.records)
        assert moto.counts == {"GetItem": 1}
        for _ in range(THRESHOLD):
            with pytest.raises(ConnectionError):
                await breaker.call(down)
        assert moto.counts["UpdateItem"] == 1
        with pytest.raises(CircuitBreakerOpenError):
            await breaker.call(echo, "rejected")


async def test_slow_store_never_delays_a_call_beyond_store_timeout(
    slow_moto: SlowProxy, table: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Every connection to the store held 5 s by a proxy, store_timeout=0.2: each call
    (each after the back-off, so each reads, and the last tries the trip write) returns
    within 1.5 s with its own result or exception, and the one warning of the outage
    says the store did not answer in time."""
    config = CONFIG.model_copy(update={"local_cache_max_age": 0, "store_timeout": 0.2})
    async with DynamoDBPersistence(table, endpoint_url=slow_moto.url) as store:
        breaker = CircuitBreaker("payments", store, config=config, clock=clock)
        with caplog.at_level(logging.WARNING, logger="aiocircuit"):
            for i in range(4):
                clock.advance(BACKOFF_MAX)
                started = time.monotonic()
                assert await breaker.call(echo, i) == i
                assert time.monotonic() - started < 1.5
            for i in range(THRESHOLD):
                clock.advance(BACKOFF_MAX)
                started = time.monotonic()
                with pytest.raises(ConnectionError, match=f"down {i}"):
                    await breaker.call(down, f"down {i}")
                assert time.monotonic() - started < 1.5
    assert slow_moto.connections >= 1
    messages = store_warnings(caplog)
    assert len(outage_warnings(messages)) == 1, messages  # one per outage, then reminders
    assert all("no answer within store_timeout=0.2s" in m for m in messages)


CORRUPTIONS = {
    "unknown-state": ({"state": s("BOGUS")}, "'BOGUS'"),
    "failure-count-not-a-number": (
        {"state": s("OPEN"), "failure_count": s("3"), "opened_at": n(WALL_START)},
        "'failure_count': {'S': '3'}",
    ),
    "opened-at-not-a-number": (
        {"state": s("OPEN"), "failure_count": n(3), "opened_at": s("yesterday")},
        "'yesterday'",
    ),
    "state-not-a-string": ({"state": n(1)}, "'state': {'N': '1'}"),
}


@pytest.mark.parametrize(("fields", "problem"), list(CORRUPTIONS.values()), ids=list(CORRUPTIONS))
async def test_corrupted_item_fails_open_with_a_warning(
    moto: CountingEndpoint,
    table: str,
    raw_client: Any,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    fields: dict[str, Any],
    problem: str,
) -> None:
    """An item no breaker wrote: calls run with their own results, each one after the
    back-off tries the store again (nothing cached), the one warning shows the offending
    value, and info() raises CircuitBreakerPersistenceError."""
    await raw_client.put_item(TableName=table, Item={"id": s("payments"), **fields})
    moto.reset_counts()
    async with DynamoDBPersistence(table, endpoint_url=moto.url) as store:
        breaker = CircuitBreaker("payments", store, config=CONFIG, clock=clock)
        with caplog.at_level(logging.WARNING, logger="aiocircuit"):
            assert await breaker.call(echo, 1) == 1
            clock.advance(BACKOFF_MAX)
            assert await breaker.call(echo, 2) == 2
            clock.advance(BACKOFF_MAX)
            with pytest.raises(ConnectionError, match="its own error"):
                await breaker.call(down, "its own error")
        assert moto.counts == {"GetItem": 3}
        messages = store_warnings(caplog)
        assert len(outage_warnings(messages)) == 1
        assert "failing open" in messages[0]
        for message in messages:
            assert f"item of circuit 'payments' in table {table!r} is not a circuit record" in (
                message
            )
            assert problem in message
        with pytest.raises(CircuitBreakerPersistenceError, match="is not a circuit record"):
            await breaker.info()


# -- event loops -----------------------------------------------------------------------


class GatedStore(DynamoDBPersistence):
    """Holds each ``acquire_probe`` at the door until ``gate`` is set, after saying so
    on ``entered``: a probe election whose request is in flight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def acquire_probe(self, name: str, **kwargs: Any) -> Any:
        self.entered.set()
        await self.gate.wait()
        return await super().acquire_probe(name, **kwargs)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_probe_cancelled_by_task_cancel_mid_election_does_not_wedge(
    moto: CountingEndpoint, table: str, clock: FakeClock
) -> None:
    """asyncio's Task.cancel() lands while the probe's election UpdateItem is in flight:
    the election still finishes, its lease is given back, the cancellation reaches the
    caller, and the next call probes at once and closes the circuit (before the fix it
    was rejected with retry_after=0 for good)."""
    async with GatedStore(table, endpoint_url=moto.url) as store:
        breaker = CircuitBreaker("payments", store, config=CONFIG, clock=clock)
        for _ in range(THRESHOLD):
            with pytest.raises(ConnectionError):
                await breaker.call(down)
        clock.advance(CONFIG.recovery_timeout)
        victim = asyncio.ensure_future(breaker.call(echo, "probe"))
        await store.entered.wait()
        victim.cancel()
        await asyncio.sleep(0)  # delivered while the request is held
        store.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await victim
        stored = await store.read("payments")
        assert stored is not None
        assert stored.state is CircuitState.HALF_OPEN
        assert stored.lease_expiry is not None
        assert stored.lease_expiry <= clock.time()  # given back: anyone may probe now
        assert await breaker.call(echo, "next") == "next"
        assert (await breaker.info()).state is CircuitState.CLOSED


async def test_lease_stored_with_an_absurd_expiry_is_taken_over(
    moto: CountingEndpoint, table: str, raw_client: Any, clock: FakeClock
) -> None:
    """A HALF_OPEN item whose lease expiry is 1e125 (a vanished holder's, in some wrong
    unit): a call is rejected for at most recovery_timeout + 2 s, then a probe takes the
    lease over (fenced on that very expiry) and closes the circuit."""
    opened_at = WALL_START - 3600
    item = {
        "id": s("payments"),
        "state": s("HALF_OPEN"),
        "failure_count": n(0),
        "opened_at": n(opened_at),
        "half_open_owner": s("vanished"),
        "probe_lease_expiry": {"N": "1E+125"},
    }
    await raw_client.put_item(TableName=table, Item=item)
    async with DynamoDBPersistence(table, endpoint_url=moto.url) as store:
        breaker = CircuitBreaker("payments", store, config=CONFIG, clock=clock)
        with pytest.raises(CircuitBreakerOpenError) as caught:
            await breaker.call(echo, "early")
        assert caught.value.retry_after <= CONFIG.recovery_timeout + 2
        clock.advance(CONFIG.recovery_timeout + 2)
        assert await breaker.call(echo, "probe") == "probe"
        assert (await breaker.info()).state is CircuitState.CLOSED


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_is_refused_not_failed_open(moto: CountingEndpoint, clock: FakeClock) -> None:
    """Under trio a protected call raises CircuitBreakerUnsupportedBackendError (saying
    aioboto3 needs asyncio) instead of failing open in silence, and never runs; opening
    the store (``async with store:``) raises it too."""
    downstream = Downstream()
    store = DynamoDBPersistence("circuits", endpoint_url=moto.url)
    with pytest.raises(CircuitBreakerUnsupportedBackendError, match="asyncio"):
        async with store:
            pass
    breaker = CircuitBreaker("payments", store, config=CONFIG, clock=clock)
    with pytest.raises(CircuitBreakerUnsupportedBackendError, match="asyncio") as caught:
        await breaker.call(downstream)
    with pytest.raises(CircuitBreakerUnsupportedBackendError, match="asyncio"):
        await breaker.info()
    await store.aclose()  # holds nothing: there is no asyncio loop here
    assert downstream.calls == 0
    assert isinstance(caught.value, CircuitBreakerPersistenceError)
    assert "trio" in str(caught.value)


def test_fresh_event_loop_per_invocation(
    moto: CountingEndpoint,
    table: str,
    clock: FakeClock,
    tracking_session: TrackingSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One store and breaker used from asyncio.run per invocation (a Lambda handler):
    a trip in one invocation rejects in a later one, read from the store on that later
    loop; every client the store opens is closed with its loop; no ResourceWarning."""
    store = DynamoDBPersistence(table, endpoint_url=moto.url, session=tracking_session)
    breaker = CircuitBreaker("payments", store, config=CONFIG, clock=clock)
    downstream = Downstream()

    def handler(event: str) -> Any:
        async def invocation() -> Any:
            downstream.error = ConnectionError("down") if event == "fail" else None
            return await breaker.call(downstream, event)

        return asyncio.run(invocation())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert handler("first") == "first"
        for _ in range(THRESHOLD):
            with pytest.raises(ConnectionError):
                handler("fail")
        assert moto.counts["UpdateItem"] == 1

        clock.advance(CONFIG.local_cache_max_age)
        moto.reset_counts()
        calls = downstream.calls
        with pytest.raises(CircuitBreakerOpenError):
            handler("rejected")
        assert downstream.calls == calls
        assert moto.counts == {"GetItem": 1}  # the OPEN state came from the store

        clock.advance(CONFIG.recovery_timeout)
        assert handler("probe") == "probe"  # elected, probes, closes
        assert moto.counts["UpdateItem"] == 2
        assert asyncio.run(breaker.info()).state is CircuitState.CLOSED
        gc.collect()
    assert tracking_session.opened >= 3  # one client per loop that used the store
    assert tracking_session.closed == tracking_session.opened
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    unclosed = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.WARNING]
    assert unclosed == []  # aiohttp reports an unclosed session through the loop


def test_store_keeps_no_finished_event_loop_alive(moto: CountingEndpoint, table: str) -> None:
    """A store used from asyncio.run per invocation lets each finished loop (and the
    closed client bound to it) be garbage collected: a warm Lambda environment runs
    thousands of invocations."""
    store = DynamoDBPersistence(table, endpoint_url=moto.url)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def invocation() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        assert await store.read("payments") is None

    for _ in range(3):
        asyncio.run(invocation())
    gc.collect()
    assert [ref() is None for ref in loops] == [True, True, True]


def test_sync_shim_trips_and_recovers_on_one_warm_client(
    moto: CountingEndpoint, table: str, clock: FakeClock, tracking_session: TrackingSession
) -> None:
    """A plain def decorated with a DynamoDB-backed breaker trips, rejects and recovers
    through the shim's portal, on one client kept warm across calls."""
    store = DynamoDBPersistence(table, endpoint_url=moto.url, session=tracking_session)
    transitions: list[CircuitState] = []
    breaker = CircuitBreaker(
        "sync-payments",
        store,
        config=CONFIG,
        clock=clock,
        on_transition=lambda t: transitions.append(t.to_state),
    )
    healthy = True
    runs = 0

    @breaker
    def handler(x: int) -> int:
        nonlocal runs
        runs += 1
        if not healthy:
            raise ConnectionError("down")
        return x * 2

    try:
        assert handler(2) == 4
        healthy = False
        for _ in range(THRESHOLD):
            with pytest.raises(ConnectionError):
                handler(1)
        with pytest.raises(CircuitBreakerOpenError):
            handler(1)
        assert runs == 3
        healthy = True
        clock.advance(CONFIG.recovery_timeout)
        assert handler(5) == 10
        assert breaker.state is CircuitState.CLOSED
        clock.advance(CONFIG.local_cache_max_age)
        assert handler(6) == 12
        assert transitions == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]
        assert moto.counts["UpdateItem"] == 3  # trip, election, close
        assert moto.counts["GetItem"] >= 2
        assert (tracking_session.opened, tracking_session.closed) == (1, 0)
    finally:
        run_blocking(store.aclose)
    assert tracking_session.closed == 1


# -- the item, attribute by attribute --------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """How a store is configured, how its table is made, and where each field lands."""

    store: dict[str, Any] = field(default_factory=dict)
    table: dict[str, Any] = field(default_factory=dict)
    key: Callable[[str], dict[str, Any]] = lambda name: {"id": s(name)}
    env: dict[str, str] = field(default_factory=dict)
    state: str = "state"
    failure_count: str = "failure_count"
    opened_at: str = "opened_at"
    owner: str = "half_open_owner"
    lease: str = "probe_lease_expiry"
    expiration: str = "expiration"


LAYOUTS = {
    "default": Layout(),
    "composite": Layout(
        store={"sort_key_attr": "sk", "static_pk_value": "svc"},
        table={"sort_key_attr": "sk"},
        key=lambda name: {"id": s("svc"), "sk": s(name)},
    ),
    "composite-lambda-pk": Layout(
        store={"sort_key_attr": "sk"},
        table={"sort_key_attr": "sk"},
        key=lambda name: {"id": s("circuit_breaker#orders-fn"), "sk": s(name)},
        env={"AWS_LAMBDA_FUNCTION_NAME": "orders-fn"},
    ),
    "custom-names": Layout(
        store={
            "key_attr": "pk",
            "state_attr": "st",
            "failure_count_attr": "fails",
            "opened_at_attr": "since",
            "half_open_owner_attr": "prober",
            "probe_lease_expiry_attr": "lease_until",
            "expiry_attr": "ttl",
        },
        table={"key_attr": "pk", "expiry_attr": "ttl"},
        key=lambda name: {"pk": s(name)},
        state="st",
        failure_count="fails",
        opened_at="since",
        owner="prober",
        lease="lease_until",
        expiration="ttl",
    ),
}


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
async def test_item_layout_is_powertools(
    layout: Layout,
    make_table: TableFactory,
    moto: CountingEndpoint,
    raw_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through a trip, an election, a reopen and a close, the raw item holds exactly
    Powertools' attributes: key, state (S), failure_count (N), opened_at (N, whole
    seconds, rounded down), owner (S) and lease (N, whole seconds, rounded up) only
    while HALF_OPEN, expiration (N) = now + recovery_timeout + 3600 on every write; TTL
    is on the expiration attribute. Beside them, while the circuit is not CLOSED, this
    library's own: opened_at and the lease to the sub-second, the open period, the
    count of failed probes."""
    for variable, value in layout.env.items():
        monkeypatch.setenv(variable, value)
    table = await make_table(**layout.table)
    clock = FakeClock(wall_start=WALL_START + 0.75)  # a fraction: stored seconds are whole
    key = layout.key("payments")

    async def stored() -> dict[str, Any]:
        response = await raw_client.get_item(TableName=table, Key=key, ConsistentRead=True)
        return normalized(dict(response["Item"]))

    def expiration() -> dict[str, str]:
        return n(int(clock.time() + CONFIG.recovery_timeout) + 3600)

    seen_by_probe: list[dict[str, Any]] = []

    def ours(opened_at: float, reopens: int, lease: float | None = None) -> dict[str, Any]:
        attributes = {
            "aiocircuit_opened_at": n(opened_at),
            "aiocircuit_open_period": n(10.0),
            "aiocircuit_reopen_count": n(reopens),
        }
        if lease is not None:
            attributes["aiocircuit_lease_expiry"] = n(lease)
        return attributes

    async def probe(error: Exception | None) -> str:
        seen_by_probe.append(await stored())
        if error is not None:
            raise error
        return "ok"

    async with DynamoDBPersistence(table, endpoint_url=moto.url, **layout.store) as store:
        breaker = CircuitBreaker("payments", store, config=CONFIG, clock=clock)
        for _ in range(THRESHOLD):
            with pytest.raises(ConnectionError):
                await breaker.call(down)
        assert await stored() == {
            **key,
            layout.state: s("OPEN"),
            layout.failure_count: n(2),
            layout.opened_at: n(WALL_START),
            layout.expiration: n(WALL_START + 10 + 3600),
            **ours(WALL_START + 0.75, 0),
        }

        clock.advance(10)  # elected; the probe fails: reopened
        with pytest.raises(ConnectionError, match="still down"):
            await breaker.call(probe, ConnectionError("still down"))
        first_owner = seen_by_probe[0][layout.owner]["S"]
        assert re.fullmatch(rf"{os.getpid()}#[0-9a-f]{{32}}", first_owner)
        assert seen_by_probe[0] == {
            **key,
            layout.state: s("HALF_OPEN"),
            layout.failure_count: n(0),
            layout.opened_at: n(WALL_START),
            layout.owner: s(first_owner),
            layout.lease: n(WALL_START + 21),  # now + recovery_timeout, rounded up
            layout.expiration: expiration(),
            **ours(WALL_START + 0.75, 0, lease=WALL_START + 20.75),
        }
        assert await stored() == {
            **key,
            layout.state: s("OPEN"),
            layout.failure_count: n(0),
            layout.opened_at: n(WALL_START + 10),
            layout.expiration: expiration(),
            **ours(WALL_START + 10.75, 1),
        }

        clock.advance(10)  # elected again; the probe succeeds: closed
        assert await breaker.call(probe, None) == "ok"
        second_owner = seen_by_probe[1][layout.owner]["S"]
        assert second_owner != first_owner  # a fresh owner id per lease
        assert seen_by_probe[1] == {
            **key,
            layout.state: s("HALF_OPEN"),
            layout.failure_count: n(0),
            layout.opened_at: n(WALL_START + 10),
            layout.owner: s(second_owner),
            layout.lease: n(WALL_START + 31),
            layout.expiration: expiration(),
            **ours(WALL_START + 10.75, 1, lease=WALL_START + 30.75),
        }
        assert await stored() == {
            **key,
            layout.state: s("CLOSED"),
            layout.failure_count: n(0),
            layout.expiration: expiration(),
        }
    ttl = await raw_client.describe_time_to_live(TableName=table)
    assert ttl["TimeToLiveDescription"]["AttributeName"] == layout.expiration
    assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"


async def test_powertools_shares_the_circuit(
    moto: CountingEndpoint, table: str, clock: FakeClock
) -> None:
    """One table, two libraries: Powertools' DynamoDB layer reads the circuit aiocircuit
    tripped, and aiocircuit rejects on a circuit Powertools tripped."""
    import boto3
    from aws_lambda_powertools.utilities.circuit_breaker.persistence import (
        CircuitBreakerDynamoDBPersistence,
    )

    client = boto3.client("dynamodb", endpoint_url=moto.url)
    try:
        powertools = CircuitBreakerDynamoDBPersistence(table, boto3_client=client)
        async with DynamoDBPersistence(table, endpoint_url=moto.url) as store:
            breaker = CircuitBreaker("payments", store, config=CONFIG, clock=clock)
            for _ in range(THRESHOLD):
                with pytest.raises(ConnectionError):
                    await breaker.call(down)
            record = await anyio.to_thread.run_sync(powertools.get_state, "payments")
            assert (record.state, record.failure_count, record.opened_at) == ("OPEN", 2, WALL_START)

            await anyio.to_thread.run_sync(
                functools.partial(
                    powertools.save_open, "partner", failure_count=5, opened_at=WALL_START
                )
            )
            other = CircuitBreaker("partner", store, config=CONFIG, clock=clock)
            with pytest.raises(CircuitBreakerOpenError) as caught:
                await other.call(echo, "never runs")
            # Powertools' item has none of this library's attributes: its whole-second
            # opened_at, and the reader's own recovery_timeout as the open period.
            assert caught.value.circuit == CircuitInfo(
                "partner", CircuitState.OPEN, 5, WALL_START, 10.0, WALL_START + 10
            )
    finally:
        client.close()


# -- construction ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fields"),
    [
        pytest.param({"table_name": ""}, {"table_name"}, id="empty-table-name"),
        pytest.param(
            {"table_name": "t", "sort_key_attr": "id"},
            {"key_attr", "sort_key_attr"},
            id="sort-key-is-partition-key",
        ),
        pytest.param(
            {"table_name": "t", "key_attr": "pk", "sort_key_attr": "pk"},
            {"key_attr", "sort_key_attr"},
            id="sort-key-is-custom-partition-key",
        ),
        pytest.param(
            {"table_name": "t", "static_pk_value": "svc"},
            {"static_pk_value"},
            id="static-pk-without-sort-key",
        ),
        pytest.param(
            {"table_name": "t", "opened_at_attr": "ts", "expiry_attr": "ts"},
            {"opened_at_attr", "expiry_attr"},
            id="two-attributes-share-a-name",
        ),
    ],
)
def test_construction_errors_name_the_field(kwargs: dict[str, Any], fields: set[str]) -> None:
    """Bad store configuration fails at construction with CircuitBreakerConfigError
    naming a field that is actually at fault."""
    with pytest.raises(CircuitBreakerConfigError) as caught:
        DynamoDBPersistence(**kwargs)
    assert caught.value.field in fields
    assert str(caught.value).startswith(f"{caught.value.field}: ")


@pytest.mark.parametrize("period", [0.05, 1.5])
async def test_sub_second_open_period_on_dynamodb(
    moto: CountingEndpoint, table: str, period: float
) -> None:
    """The table keeps sub-second times: no probe before the open period has passed
    since the trip, to the millisecond, and one as soon as it has, also seen from
    another process; a failed probe doubles the period for the fleet."""
    clock = FakeClock(wall_start=WALL_START + 0.4375)
    config = CircuitBreakerConfig(
        failure_threshold=1,
        success_threshold=1,
        recovery_timeout=period,
        recovery_backoff=2,
        local_cache_max_age=0,
    )
    async with DynamoDBPersistence(table, endpoint_url=moto.url) as store:
        breaker = CircuitBreaker("quick", store, config=config, clock=clock)
        other = CircuitBreaker("quick", store, config=config, clock=clock)
        with pytest.raises(ConnectionError):
            await breaker.call(down)
        tripped = clock.time()
        clock.advance(period - 0.001)
        with pytest.raises(CircuitBreakerOpenError) as caught:
            await other.call(echo, "too soon")
        assert caught.value.circuit.probe_at == pytest.approx(tripped + period, abs=1e-6)
        assert caught.value.retry_after == pytest.approx(0.001, abs=1e-6)
        clock.advance(0.001)
        with pytest.raises(ConnectionError):
            await other.call(down)  # the probe, at the period's end: it fails
        info = await breaker.info()
        assert info.open_period == 2 * period
        assert info.opened_at == pytest.approx(clock.time(), abs=1e-6)
