"""The clients DynamoDBPersistence opens, one per event loop: opening in the background
within the caller's deadline, opening up front, failures reported and retried, event
loops closed without shutting down let go of, and stored numbers parsed whatever their
size."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import warnings
import weakref
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from aiobotocore.utils import AioContainerMetadataFetcher

from aiocircuit import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerPersistenceError,
    CircuitState,
)
from aiocircuit._portal import run_blocking
from aiocircuit.persistence import CircuitRecord
from aiocircuit.persistence.dynamodb import DynamoDBPersistence
from aiocircuit.testing import FakeClock

from .conftest import TrackingSession

if TYPE_CHECKING:
    from ..moto_server import CountingEndpoint
    from .conftest import CredentialsEndpoint

pytestmark = pytest.mark.anyio

BOTOCORE_GIVES_UP = 9.0  # three tries of 2 s, 1 s apart, on a hanging credentials endpoint


def asyncio_complaints(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What asyncio logged at WARNING or above: "Task exception was never retrieved",
    "Task was destroyed but it is pending!", aiohttp's "Unclosed client session"."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "asyncio" and r.levelno >= logging.WARNING
    ]


async def echo(value: Any) -> Any:
    return value


# -- opening in the background ---------------------------------------------------------


async def test_opening_keeps_to_the_callers_deadline(
    moto: CountingEndpoint,
    table: str,
    credentials_endpoint: CredentialsEndpoint,
    monkeypatch: pytest.MonkeyPatch,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Credentials come from a container endpoint that hangs: a read under
    fail_after(0.5) raises TimeoutError within it, not after the ~9 s botocore takes to
    give up, and so does a breaker's store read under store_timeout; later and
    concurrent operations wait on the same opening instead of starting another; once
    the endpoint answers, that opening completes and operations use its client."""
    credentials_endpoint.install(monkeypatch)
    session = TrackingSession()
    store = DynamoDBPersistence(table, endpoint_url=moto.url, session=session)
    try:
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(TimeoutError), anyio.fail_after(0.5):
                await store.read("payments")
            assert time.monotonic() - started < 1.5

        async def impatient() -> None:
            with pytest.raises(TimeoutError), anyio.fail_after(0.1):
                await store.read("payments")

        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(impatient)

        config = CircuitBreakerConfig(store_timeout=0.2)
        breaker = CircuitBreaker("payments", store, config=config, clock=clock)
        started = time.monotonic()
        assert await breaker.call(echo, "ran") == "ran"  # failed open, in time
        assert time.monotonic() - started < 1.5
        assert (session.requested, session.opened) == (1, 0)  # one opening, still going

        credentials_endpoint.serve()
        with anyio.fail_after(BOTOCORE_GIVES_UP):
            await store.open()  # waits for that same opening to complete
        assert (session.requested, session.opened) == (1, 1)
        assert await store.read("payments") is None
        assert session.requested == 1
        assert moto.counts == {"GetItem": 1}
    finally:
        await store.aclose()
    assert session.closed == 1
    assert asyncio_complaints(caplog) == []


async def test_failed_opening_is_reported_then_tried_afresh(
    moto: CountingEndpoint,
    table: str,
    credentials_endpoint: CredentialsEndpoint,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The credentials endpoint answers 500: an opening nobody waits on any more fails
    quietly (no "Task exception was never retrieved"); an operation waiting on one gets
    CircuitBreakerPersistenceError saying which table's client failed to open, and why;
    each next operation starts a fresh opening, and one succeeds once credentials come."""
    monkeypatch.setattr(AioContainerMetadataFetcher, "SLEEP_TIME", 0)  # botocore's pause
    credentials_endpoint.install(monkeypatch)
    session = TrackingSession()
    store = DynamoDBPersistence(table, endpoint_url=moto.url, session=session)
    try:
        with pytest.raises(TimeoutError), anyio.fail_after(0.2):
            await store.read("payments")
        opening = store._clients[asyncio.get_running_loop()]._opening
        credentials_endpoint.fail()
        with anyio.fail_after(BOTOCORE_GIVES_UP):
            await asyncio.wait((opening,))  # retrieves nothing
        assert len(session.failed) == 1
        assert store._clients == {}  # let go of: the next operation opens afresh
        del opening
        gc.collect()  # where asyncio would report an exception nobody retrieved
        assert asyncio_complaints(caplog) == []

        with pytest.raises(CircuitBreakerPersistenceError) as caught:
            await store.read("payments")
        assert str(caught.value).startswith(
            f"opening a DynamoDB client for table {table!r} failed - (CredentialRetrievalError: "
        )
        assert caught.value.__cause__ is session.failed[1]
        assert session.requested == 2

        credentials_endpoint.serve()
        assert await store.read("payments") is None
        assert (session.requested, session.opened, len(session.failed)) == (3, 1, 2)
    finally:
        await store.aclose()
    gc.collect()
    assert asyncio_complaints(caplog) == []


# -- opening up front ------------------------------------------------------------------


async def test_async_with_opens_the_client_up_front(
    moto: CountingEndpoint, table: str, tracking_session: TrackingSession
) -> None:
    """``async with store:`` opens the running loop's client before any operation, and
    operations then use it; open() again does nothing more."""
    async with DynamoDBPersistence(table, endpoint_url=moto.url, session=tracking_session) as store:
        assert (tracking_session.requested, tracking_session.opened) == (1, 1)
        await store.open()
        assert moto.counts == {}  # opening sends DynamoDB nothing
        assert await store.read("payments") is None
        assert tracking_session.requested == 1
    assert tracking_session.closed == 1


def test_open_sync_opens_the_client_the_sync_shim_uses(
    moto: CountingEndpoint, table: str, tracking_session: TrackingSession, clock: FakeClock
) -> None:
    """open_sync() (a Lambda init phase, with no event loop) opens a client where the
    sync shim runs the store's operations: a plain def's first protected call opens
    nothing more."""
    store = DynamoDBPersistence(table, endpoint_url=moto.url, session=tracking_session)
    breaker = CircuitBreaker("payments", store, clock=clock)

    @breaker
    def handler(x: int) -> int:
        return x * 2

    try:
        store.open_sync()
        assert (tracking_session.requested, tracking_session.opened) == (1, 1)
        assert moto.counts == {}
        assert handler(2) == 4
        assert breaker.state is CircuitState.CLOSED
        assert tracking_session.requested == 1
        assert moto.counts == {"GetItem": 1}
    finally:
        run_blocking(store.aclose)
    assert tracking_session.closed == 1


# -- event loops closed without shutting down ------------------------------------------


@pytest.mark.parametrize(("server", "invocations"), [("moto", 200), ("keep-alive", 50)])
def test_loops_closed_without_shutdown_are_let_go(
    server: str, invocations: int, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """200 invocations of new_event_loop() / run_until_complete(read) / close(), as
    Lambda handlers and older frameworks do, with no shutdown_asyncgens(): every loop but
    the last is freed, the store holds state for one loop at most, and nothing warns of
    an unclosed session, connector, transport or socket (also against a server that
    keeps connections open, as DynamoDB does). aclose() lets go of the last one."""
    if server == "moto":
        url = request.getfixturevalue("moto").url
        table = request.getfixturevalue("table")
    else:
        url = request.getfixturevalue("keep_alive_dynamodb").url
        table = "circuits"
    store = DynamoDBPersistence(table, endpoint_url=url)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(invocations):
            loop = asyncio.new_event_loop()
            loops.append(weakref.ref(loop))
            try:
                assert loop.run_until_complete(store.read("payments")) is None
            finally:
                loop.close()
            del loop
        gc.collect()
        alive = [i for i, ref in enumerate(loops) if ref() is not None]
        assert alive in ([], [invocations - 1])
        assert len(store._clients) <= 1

        asyncio.run(store.aclose())
        gc.collect()
        assert store._clients == {}
        assert [ref() for ref in loops] == [None] * invocations
    assert [str(w.message) for w in caught] == []
    assert asyncio_complaints(caplog) == []


def test_loop_closed_while_its_client_opens(
    moto: CountingEndpoint,
    table: str,
    credentials_endpoint: CredentialsEndpoint,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An invocation gives up on a hanging opening and closes its loop without shutting
    it down, the opening still pending: the next invocation lets go of it, and of that
    loop, without a warning, and opens its own client."""
    credentials_endpoint.install(monkeypatch)
    store = DynamoDBPersistence(table, endpoint_url=moto.url)

    async def impatient() -> None:
        with pytest.raises(TimeoutError), anyio.fail_after(0.2):
            await store.read("payments")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = asyncio.new_event_loop()
        first.run_until_complete(impatient())
        first.close()
        first_ref = weakref.ref(first)
        del first

        credentials_endpoint.serve()
        second = asyncio.new_event_loop()
        try:
            assert second.run_until_complete(store.read("payments")) is None
            second.run_until_complete(store.aclose())
        finally:
            second.close()
        gc.collect()
        assert first_ref() is None
        assert store._clients == {}
    assert [str(w.message) for w in caught] == []
    assert asyncio_complaints(caplog) == []


# -- numbers as stored -----------------------------------------------------------------


async def test_stored_numbers_are_read_as_whole_numbers_whatever_their_size(
    moto: CountingEndpoint, table: str, raw_client: Any
) -> None:
    """Numbers some other writer stored, however absurd (1E+125, negative, fractional),
    read as ints, rounded down: the breaker bounds what they mean; the store does not
    refuse them."""
    await raw_client.put_item(
        TableName=table,
        Item={
            "id": {"S": "payments"},
            "state": {"S": "HALF_OPEN"},
            "failure_count": {"N": "1E+125"},
            "opened_at": {"N": "-1800000000"},
            "half_open_owner": {"S": "someone"},
            "probe_lease_expiry": {"N": "-0.5"},
        },
    )
    async with DynamoDBPersistence(table, endpoint_url=moto.url) as store:
        record = await store.read("payments")
    assert record == CircuitRecord(
        CircuitState.HALF_OPEN,
        failure_count=10**125,
        opened_at=-1_800_000_000,
        probe_owner="someone",
        lease_expiry=-1,
    )
    assert record is not None
    assert type(record.failure_count) is int
