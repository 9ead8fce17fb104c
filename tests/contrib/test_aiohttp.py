"""aiocircuit.contrib.aiohttp against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

import aiocircuit.contrib.aiohttp as integration
from aiocircuit import (
    CircuitBreakerConfig,
    CircuitBreakerConfigError,
    CircuitBreakerOpenError,
    CircuitInfo,
    CircuitState,
    CircuitTransition,
)
from aiocircuit.contrib.aiohttp import CircuitBreakerMiddleware
from aiocircuit.persistence import InMemoryPersistence
from aiocircuit.testing import FakeClock

from .conftest import Downstream

pytestmark = pytest.mark.anyio

CONFIG = CircuitBreakerConfig(failure_threshold=2, success_threshold=1, recovery_timeout=10)


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs on asyncio only, so these tests do not run on trio."""
    return "asyncio"


def middleware(clock: FakeClock, **kwargs: Any) -> CircuitBreakerMiddleware:
    kwargs.setdefault("config", CONFIG)
    return CircuitBreakerMiddleware(persistence_store=InMemoryPersistence(), clock=clock, **kwargs)


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def trip_with_503(session: aiohttp.ClientSession, server: Downstream) -> None:
    server.behaviour = 503
    for _ in range(2):
        assert (await get(session, server.url))[0] == 503


async def test_server_errors_trip_and_open_circuit_makes_no_connection(
    clock: FakeClock, downstream: Downstream
) -> None:
    """5xx responses count; once open, requests raise CircuitBreakerOpenError and not one
    more connection or request reaches the server."""
    breakers = middleware(clock)
    async with aiohttp.ClientSession(middlewares=(breakers,)) as session:
        assert await get(session, downstream.url) == (200, "downstream says 200")
        await trip_with_503(session, downstream)
        assert downstream.seen == (3, 3)
        for _ in range(5):
            with pytest.raises(CircuitBreakerOpenError) as caught:
                await get(session, downstream.url + "/anything")
        assert downstream.seen == (3, 3)
    assert caught.value.circuit.name == downstream.origin
    assert caught.value.retry_after == pytest.approx(10)
    assert breakers.circuits[downstream.origin].state is CircuitState.OPEN


async def test_server_error_response_reaches_caller_unread(
    clock: FakeClock, downstream: Downstream
) -> None:
    """A counted 5xx response is still the caller's, body unread and readable."""
    downstream.behaviour = 502
    async with (
        aiohttp.ClientSession(middlewares=(middleware(clock),)) as session,
        session.get(downstream.url) as response,
    ):
        assert response.status == 502
        assert not response.content.at_eof()
        assert await response.read() == b"downstream says 502"


async def test_client_errors_do_not_count(clock: FakeClock, downstream: Downstream) -> None:
    """4xx responses never trip the circuit."""
    downstream.behaviour = 404
    breakers = middleware(clock)
    async with aiohttp.ClientSession(middlewares=(breakers,)) as session:
        for _ in range(5):
            assert (await get(session, downstream.url))[0] == 404
    assert breakers.circuits[downstream.origin].state is CircuitState.CLOSED


async def test_success_resets_the_failure_count(clock: FakeClock, downstream: Downstream) -> None:
    """Failures must be consecutive to trip: a 200 between two 503s starts the count
    again (on a closed circuit whose cached state is fresh, the middleware's fast path)."""
    breakers = middleware(clock)
    async with aiohttp.ClientSession(middlewares=(breakers,)) as session:
        for status in (200, 503, 200, 503, 200, 503):
            downstream.behaviour = status
            assert (await get(session, downstream.url))[0] == status
        assert breakers.circuits[downstream.origin].state is CircuitState.CLOSED
        assert (await get(session, downstream.url))[0] == 503
    assert breakers.circuits[downstream.origin].state is CircuitState.OPEN


async def test_connection_refused_trips(clock: FakeClock, dead_url: str) -> None:
    """Connect errors count; the open circuit then raises before trying to connect."""
    async with aiohttp.ClientSession(middlewares=(middleware(clock),)) as session:
        for _ in range(2):
            with pytest.raises(aiohttp.ClientConnectorError):
                await get(session, dead_url)
        with pytest.raises(CircuitBreakerOpenError):
            await get(session, dead_url)


async def test_dropped_connection_counts_each_attempt(
    clock: FakeClock, downstream: Downstream
) -> None:
    """A server that hangs up counts. aiohttp retries an idempotent request once on a
    dropped connection, through the middleware again, so one GET is two failures."""
    downstream.behaviour = "drop"
    breakers = middleware(clock)
    async with aiohttp.ClientSession(middlewares=(breakers,)) as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await get(session, downstream.url)
        assert downstream.seen == (2, 2)
        with pytest.raises(CircuitBreakerOpenError):
            await get(session, downstream.url)
    assert downstream.seen == (2, 2)


async def test_total_timeout_awaiting_the_response_counts(
    clock: FakeClock, downstream: Downstream
) -> None:
    """The session's total timeout, expiring while the server sits on the request,
    counts; the caller still gets asyncio.TimeoutError."""
    downstream.behaviour = "hang"
    timeout = aiohttp.ClientTimeout(total=0.1)
    async with aiohttp.ClientSession(middlewares=(middleware(clock),), timeout=timeout) as session:
        for _ in range(2):
            with pytest.raises(asyncio.TimeoutError):
                await get(session, downstream.url)
        with pytest.raises(CircuitBreakerOpenError):
            await get(session, downstream.url)
    assert downstream.seen == (2, 2)


async def test_total_timeout_while_connecting_counts(clock: FakeClock, blackhole_url: str) -> None:
    """The total timeout expiring while connecting to a host that drops packets counts
    (aiohttp delivers it to middlewares as a cancellation), the caller gets
    asyncio.TimeoutError, and the task is left uncancelled."""
    timeout = aiohttp.ClientTimeout(total=0.1)
    async with aiohttp.ClientSession(middlewares=(middleware(clock),), timeout=timeout) as session:
        for _ in range(2):
            with pytest.raises(asyncio.TimeoutError):
                await get(session, blackhole_url)
        if sys.version_info >= (3, 11):  # Task.cancelling() is new in 3.11
            task = asyncio.current_task()
            assert task is not None
            assert task.cancelling() == 0
        with pytest.raises(CircuitBreakerOpenError):
            await get(session, blackhole_url)


async def test_total_timeout_while_connecting_is_a_cancellation_inside_middlewares(
    clock: FakeClock, blackhole_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins why the middleware peeks at aiohttp's private timer: without the peek, a
    total timeout during connect reaches middlewares as CancelledError, which never
    counts. If this starts failing, aiohttp raises TimeoutError there and the peek can
    go."""
    monkeypatch.setattr(integration, "_total_timeout_fired", lambda request: False)
    breakers = middleware(clock)
    timeout = aiohttp.ClientTimeout(total=0.1)
    async with aiohttp.ClientSession(middlewares=(breakers,), timeout=timeout) as session:
        for _ in range(2):
            with pytest.raises(asyncio.TimeoutError):
                await get(session, blackhole_url)
    assert next(iter(breakers.circuits.values())).state is CircuitState.CLOSED


async def test_read_timeout_counts(clock: FakeClock, downstream: Downstream) -> None:
    """A socket read timeout (aiohttp.SocketTimeoutError, a ServerTimeoutError) counts."""
    downstream.behaviour = "hang"
    timeout = aiohttp.ClientTimeout(sock_read=0.1)
    async with aiohttp.ClientSession(middlewares=(middleware(clock),), timeout=timeout) as session:
        for _ in range(2):
            with pytest.raises(aiohttp.ServerTimeoutError):
                await get(session, downstream.url)
        with pytest.raises(CircuitBreakerOpenError):
            await get(session, downstream.url)


async def test_each_origin_has_its_own_circuit(
    clock: FakeClock, make_downstream: Callable[[str], Downstream]
) -> None:
    """Two ports on one host are two origins: tripping one leaves the other closed."""
    sick, healthy = make_downstream("sick"), make_downstream("healthy")
    events: list[CircuitTransition] = []
    breakers = middleware(clock, on_transition=events.append)
    async with aiohttp.ClientSession(middlewares=(breakers,)) as session:
        await trip_with_503(session, sick)
        with pytest.raises(CircuitBreakerOpenError):
            await get(session, sick.url)
        assert (await get(session, healthy.url))[0] == 200
    assert set(breakers.circuits) == {sick.origin, healthy.origin}
    assert [(e.circuit_name, e.to_state) for e in events] == [(sick.origin, CircuitState.OPEN)]


async def test_key_override_shares_one_circuit(
    clock: FakeClock, make_downstream: Callable[[str], Downstream]
) -> None:
    """key= names the circuit: two origins keyed as one service trip together."""
    primary, replica = make_downstream("primary"), make_downstream("replica")
    breakers = middleware(clock, key=lambda request: "payments")
    async with aiohttp.ClientSession(middlewares=(breakers,)) as session:
        await trip_with_503(session, primary)
        with pytest.raises(CircuitBreakerOpenError) as caught:
            await get(session, replica.url)
    assert replica.seen == (0, 0)
    assert caught.value.circuit.name == "payments"


async def test_per_request_middleware(clock: FakeClock, downstream: Downstream) -> None:
    """The middleware works passed to one request, not the whole session."""
    breakers = middleware(clock)
    downstream.behaviour = 503
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.get(downstream.url, middlewares=(breakers,)) as response:
                assert response.status == 503
        with pytest.raises(CircuitBreakerOpenError):
            await session.get(downstream.url, middlewares=(breakers,))
        assert (await get(session, downstream.url))[0] == 503  # unprotected requests pass
    assert downstream.seen == (3, 3)


async def test_recovery_sends_one_probe_then_closes(
    clock: FakeClock, downstream: Downstream
) -> None:
    """Past recovery_timeout exactly one probe reaches the server; its 200 closes the
    circuit."""
    breakers = middleware(clock)
    async with aiohttp.ClientSession(middlewares=(breakers,)) as session:
        await trip_with_503(session, downstream)
        downstream.behaviour = 200
        clock.advance(9)
        with pytest.raises(CircuitBreakerOpenError):
            await get(session, downstream.url)
        assert downstream.seen == (2, 2)
        clock.advance(1)
        assert (await get(session, downstream.url))[0] == 200
        assert downstream.seen == (3, 3)
        assert breakers.circuits[downstream.origin].state is CircuitState.CLOSED


async def test_on_circuit_open_serves_from_a_standby(
    clock: FakeClock, make_downstream: Callable[[str], Downstream]
) -> None:
    """on_circuit_open may return a ClientResponse (here from a standby origin, through
    another session); the caller reads it and the primary sees no connection."""
    primary, standby = make_downstream("primary"), make_downstream("standby")
    seen: list[CircuitInfo] = []
    async with aiohttp.ClientSession() as standby_session:

        async def fallback(
            request: aiohttp.ClientRequest, *, circuit: CircuitInfo
        ) -> aiohttp.ClientResponse:
            seen.append(circuit)
            return await standby_session.get(standby.url + request.url.path)

        breakers = middleware(clock, on_circuit_open=fallback)
        async with aiohttp.ClientSession(middlewares=(breakers,)) as session:
            await trip_with_503(session, primary)
            assert await get(session, primary.url + "/orders") == (200, "standby says 200")
    assert primary.seen == (2, 2)
    assert standby.seen == (1, 1)
    assert seen == [
        CircuitInfo(primary.origin, CircuitState.OPEN, 2, 1_800_000_000, 10.0, 1_800_000_010)
    ]


async def test_on_circuit_open_returning_none_raises(
    clock: FakeClock, downstream: Downstream
) -> None:
    """A hook that returns None lets the open error raise; any other non-response is a
    TypeError."""
    results: list[object] = [None, "cached"]
    breakers = middleware(clock, on_circuit_open=lambda request, circuit: results.pop(0))
    async with aiohttp.ClientSession(middlewares=(breakers,)) as session:
        await trip_with_503(session, downstream)
        with pytest.raises(CircuitBreakerOpenError):
            await get(session, downstream.url)
        with pytest.raises(
            TypeError, match=r"must return a aiohttp\.client_reqrep\.ClientResponse"
        ):
            await get(session, downstream.url)


async def test_user_predicates_win(clock: FakeClock, downstream: Downstream) -> None:
    """A config's own result_predicate replaces the 5xx rule."""
    config = CircuitBreakerConfig(
        failure_threshold=2, result_predicate=lambda response: response.status == 429
    )
    breakers = middleware(clock, config=config)
    async with aiohttp.ClientSession(middlewares=(breakers,)) as session:
        downstream.behaviour = 503
        for _ in range(3):
            await get(session, downstream.url)
        assert breakers.circuits[downstream.origin].state is CircuitState.CLOSED
        downstream.behaviour = 429
        for _ in range(2):
            await get(session, downstream.url)
        assert breakers.circuits[downstream.origin].state is CircuitState.OPEN


def test_bad_arguments_fail_at_construction() -> None:
    """Bad arguments raise CircuitBreakerConfigError naming the field."""
    with pytest.raises(CircuitBreakerConfigError) as caught:
        CircuitBreakerMiddleware(key="payments")  # type: ignore[arg-type]
    assert caught.value.field == "key"


def test_import_aiocircuit_never_imports_aiohttp() -> None:
    """`import aiocircuit` (and aiocircuit.contrib) leaves aiohttp unimported."""
    code = "import sys, aiocircuit, aiocircuit.contrib; print('aiohttp' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_missing_aiohttp_names_the_fix() -> None:
    """Without aiohttp, importing the integration says which pip install fixes it."""
    code = (
        "import sys; sys.modules['aiohttp'] = None\n"
        "try:\n    import aiocircuit.contrib.aiohttp\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install aiohttp" in result.stdout, result.stderr


def test_all_is_sorted_and_reports_public_module() -> None:
    """__all__ is sorted, complete, and its names live in aiocircuit.contrib.aiohttp."""
    public = {
        name
        for name, value in vars(integration).items()
        if not name.startswith("_") and getattr(value, "__module__", "") == integration.__name__
    }
    assert public == set(integration.__all__) == {"CircuitBreakerMiddleware"}
