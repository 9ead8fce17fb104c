"""aiocircuit.contrib.httpx against a real HTTP server on loopback, on asyncio and trio,
and through httpx.Client for the sync transport."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from aiocircuit import (
    CircuitBreakerConfig,
    CircuitBreakerConfigError,
    CircuitBreakerOpenError,
    CircuitInfo,
    CircuitState,
    CircuitTransition,
)
from aiocircuit.contrib.httpx import CircuitBreakerTransport, SyncCircuitBreakerTransport
from aiocircuit.persistence import InMemoryPersistence
from aiocircuit.testing import FakeClock

from .conftest import Downstream

CONFIG = CircuitBreakerConfig(failure_threshold=2, success_threshold=1, recovery_timeout=10)


def transport(clock: FakeClock, **kwargs: Any) -> CircuitBreakerTransport:
    kwargs.setdefault("config", CONFIG)
    return CircuitBreakerTransport(persistence_store=InMemoryPersistence(), clock=clock, **kwargs)


def sync_transport(clock: FakeClock, **kwargs: Any) -> SyncCircuitBreakerTransport:
    kwargs.setdefault("config", CONFIG)
    return SyncCircuitBreakerTransport(
        persistence_store=InMemoryPersistence(), clock=clock, **kwargs
    )


async def trip_with_503(client: httpx.AsyncClient, server: Downstream) -> None:
    server.behaviour = 503
    for _ in range(2):
        assert (await client.get(server.url)).status_code == 503


@pytest.mark.anyio
async def test_server_errors_trip_and_open_circuit_makes_no_connection(
    clock: FakeClock, downstream: Downstream
) -> None:
    """5xx responses count; once open, requests raise CircuitBreakerOpenError and not one
    more connection or request reaches the server."""
    breakers = transport(clock)
    async with httpx.AsyncClient(transport=breakers) as client:
        assert (await client.get(downstream.url)).status_code == 200
        await trip_with_503(client, downstream)
        assert downstream.seen == (3, 3)
        for _ in range(5):
            with pytest.raises(CircuitBreakerOpenError) as caught:
                await client.get(downstream.url + "/anything")
        assert downstream.seen == (3, 3)
    assert caught.value.circuit.name == downstream.origin
    assert caught.value.retry_after == pytest.approx(10)
    assert breakers.circuits[downstream.origin].state is CircuitState.OPEN


@pytest.mark.anyio
async def test_server_error_response_reaches_caller_unread(
    clock: FakeClock, downstream: Downstream
) -> None:
    """A counted 5xx response is still the caller's, body unread and readable."""
    downstream.behaviour = 502
    async with (
        httpx.AsyncClient(transport=transport(clock)) as client,
        client.stream("GET", downstream.url) as response,
    ):
        assert response.status_code == 502
        assert not response.is_stream_consumed
        assert await response.aread() == b"downstream says 502"


@pytest.mark.anyio
async def test_client_errors_do_not_count(clock: FakeClock, downstream: Downstream) -> None:
    """4xx responses are the caller's problem, not the downstream's: they never trip."""
    downstream.behaviour = 404
    breakers = transport(clock)
    async with httpx.AsyncClient(transport=breakers) as client:
        for _ in range(5):
            assert (await client.get(downstream.url)).status_code == 404
    assert downstream.seen == (5, 5)
    assert breakers.circuits[downstream.origin].state is CircuitState.CLOSED


@pytest.mark.anyio
async def test_success_resets_the_failure_count(clock: FakeClock, downstream: Downstream) -> None:
    """Failures must be consecutive to trip: a 200 between two 503s starts the count
    again (on a closed circuit whose cached state is fresh, the transport's fast path)."""
    breakers = transport(clock)
    async with httpx.AsyncClient(transport=breakers) as client:
        for status in (200, 503, 200, 503, 200, 503):
            downstream.behaviour = status
            assert (await client.get(downstream.url)).status_code == status
        assert breakers.circuits[downstream.origin].state is CircuitState.CLOSED
        assert (await client.get(downstream.url)).status_code == 503
    assert breakers.circuits[downstream.origin].state is CircuitState.OPEN


@pytest.mark.anyio
async def test_connection_refused_trips(clock: FakeClock, dead_url: str) -> None:
    """Connect errors count; the open circuit then raises before trying to connect."""
    async with httpx.AsyncClient(transport=transport(clock)) as client:
        for _ in range(2):
            with pytest.raises(httpx.ConnectError):
                await client.get(dead_url)
        with pytest.raises(CircuitBreakerOpenError):
            await client.get(dead_url)


@pytest.mark.anyio
async def test_dropped_connection_trips(clock: FakeClock, downstream: Downstream) -> None:
    """A server that hangs up without answering counts (httpx.RemoteProtocolError)."""
    downstream.behaviour = "drop"
    async with httpx.AsyncClient(transport=transport(clock)) as client:
        for _ in range(2):
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(downstream.url)
        with pytest.raises(CircuitBreakerOpenError):
            await client.get(downstream.url)
    assert downstream.seen == (2, 2)


@pytest.mark.anyio
async def test_each_origin_has_its_own_circuit(
    clock: FakeClock, make_downstream: Callable[[str], Downstream]
) -> None:
    """Two ports on one host are two origins: tripping one leaves the other closed."""
    sick, healthy = make_downstream("sick"), make_downstream("healthy")
    events: list[CircuitTransition] = []
    breakers = transport(clock, on_transition=events.append)
    async with httpx.AsyncClient(transport=breakers) as client:
        await trip_with_503(client, sick)
        with pytest.raises(CircuitBreakerOpenError):
            await client.get(sick.url)
        assert (await client.get(healthy.url)).status_code == 200
    assert set(breakers.circuits) == {sick.origin, healthy.origin}
    assert breakers.circuits[healthy.origin].state is CircuitState.CLOSED
    assert [(e.circuit_name, e.to_state) for e in events] == [(sick.origin, CircuitState.OPEN)]


@pytest.mark.anyio
async def test_key_override_shares_one_circuit(
    clock: FakeClock, make_downstream: Callable[[str], Downstream]
) -> None:
    """key= names the circuit: two origins keyed as one service trip together."""
    primary, replica = make_downstream("primary"), make_downstream("replica")
    breakers = transport(clock, key=lambda request: "payments")
    async with httpx.AsyncClient(transport=breakers) as client:
        await trip_with_503(client, primary)
        with pytest.raises(CircuitBreakerOpenError) as caught:
            await client.get(replica.url)
    assert replica.seen == (0, 0)
    assert caught.value.circuit.name == "payments"
    assert list(breakers.circuits) == ["payments"]


@pytest.mark.anyio
async def test_recovery_sends_one_probe_then_closes(
    clock: FakeClock, downstream: Downstream
) -> None:
    """Past recovery_timeout exactly one probe reaches the server; its 200 closes the
    circuit and traffic flows again."""
    breakers = transport(clock)
    async with httpx.AsyncClient(transport=breakers) as client:
        await trip_with_503(client, downstream)
        downstream.behaviour = 200
        clock.advance(9)
        with pytest.raises(CircuitBreakerOpenError):
            await client.get(downstream.url)
        assert downstream.seen == (2, 2)
        clock.advance(1)
        assert (await client.get(downstream.url)).status_code == 200
        assert downstream.seen == (3, 3)
        assert breakers.circuits[downstream.origin].state is CircuitState.CLOSED
        assert (await client.get(downstream.url)).status_code == 200


@pytest.mark.anyio
async def test_failed_probe_reopens(clock: FakeClock, downstream: Downstream) -> None:
    """A probe answered with a 5xx reopens the circuit for another recovery_timeout."""
    breakers = transport(clock)
    async with httpx.AsyncClient(transport=breakers) as client:
        await trip_with_503(client, downstream)
        clock.advance(10)
        assert (await client.get(downstream.url)).status_code == 503
        with pytest.raises(CircuitBreakerOpenError):
            await client.get(downstream.url)
    assert downstream.seen == (3, 3)
    assert breakers.circuits[downstream.origin].state is CircuitState.OPEN


@pytest.mark.anyio
@pytest.mark.parametrize("flavour", ["plain", "async"])
async def test_on_circuit_open_returns_fallback_response(
    clock: FakeClock, downstream: Downstream, flavour: str
) -> None:
    """on_circuit_open (plain or async) gets the request and circuit; the response it
    returns is the caller's, and no connection is made."""
    seen: list[tuple[str, CircuitInfo]] = []

    def plain(request: httpx.Request, *, circuit: CircuitInfo) -> httpx.Response:
        seen.append((str(request.url), circuit))
        return httpx.Response(200, json={"cached": True})

    async def asynchronous(request: httpx.Request, *, circuit: CircuitInfo) -> httpx.Response:
        await anyio.lowlevel.checkpoint()
        return plain(request, circuit=circuit)

    fallback = plain if flavour == "plain" else asynchronous
    async with httpx.AsyncClient(transport=transport(clock, on_circuit_open=fallback)) as client:
        await trip_with_503(client, downstream)
        response = await client.get(downstream.url + "/orders")
    assert response.json() == {"cached": True}
    assert response.request.url == downstream.url + "/orders"
    assert downstream.seen == (2, 2)
    assert seen == [
        (
            downstream.url + "/orders",
            CircuitInfo(
                downstream.origin, CircuitState.OPEN, 2, 1_800_000_000, 10.0, 1_800_000_010
            ),
        )
    ]


@pytest.mark.anyio
async def test_on_circuit_open_returning_none_raises(
    clock: FakeClock, downstream: Downstream
) -> None:
    """A hook that returns None (one that only logs, say) lets the open error raise."""
    calls: list[str] = []
    breakers = transport(clock, on_circuit_open=lambda request, circuit: calls.append(circuit.name))
    async with httpx.AsyncClient(transport=breakers) as client:
        await trip_with_503(client, downstream)
        with pytest.raises(CircuitBreakerOpenError):
            await client.get(downstream.url)
    assert calls == [downstream.origin]


@pytest.mark.anyio
async def test_on_circuit_open_wrong_return_type(clock: FakeClock, downstream: Downstream) -> None:
    """A hook that returns something other than a response is a TypeError, not a
    confusing failure deep inside httpx."""
    breakers = transport(clock, on_circuit_open=lambda request, circuit: "cached")
    async with httpx.AsyncClient(transport=breakers) as client:
        await trip_with_503(client, downstream)
        with pytest.raises(TypeError, match=r"must return a httpx\.Response or None, got str"):
            await client.get(downstream.url)


@pytest.mark.anyio
async def test_user_predicates_win(clock: FakeClock, downstream: Downstream) -> None:
    """A config's own result_predicate replaces the 5xx rule."""
    config = CircuitBreakerConfig(
        failure_threshold=2, result_predicate=lambda response: response.status_code == 429
    )
    breakers = transport(clock, config=config)
    async with httpx.AsyncClient(transport=breakers) as client:
        downstream.behaviour = 503
        for _ in range(3):
            await client.get(downstream.url)
        assert breakers.circuits[downstream.origin].state is CircuitState.CLOSED
        downstream.behaviour = 429
        for _ in range(2):
            await client.get(downstream.url)
        assert breakers.circuits[downstream.origin].state is CircuitState.OPEN


@pytest.mark.anyio
async def test_ignored_exceptions_narrow_transport_errors(clock: FakeClock, dead_url: str) -> None:
    """ignored_exceptions in the config take transport errors out of the count."""
    config = CircuitBreakerConfig(failure_threshold=2, ignored_exceptions=httpx.ConnectError)
    breakers = transport(clock, config=config)
    async with httpx.AsyncClient(transport=breakers) as client:
        for _ in range(3):
            with pytest.raises(httpx.ConnectError):
                await client.get(dead_url)
    assert next(iter(breakers.circuits.values())).state is CircuitState.CLOSED


@pytest.mark.anyio
async def test_other_exceptions_do_not_count(clock: FakeClock) -> None:
    """An exception that is not a transport error (a bug in a wrapped transport) passes
    through untouched and does not trip the circuit."""

    def broken(request: httpx.Request) -> httpx.Response:
        raise KeyError("bug")

    breakers = transport(clock, transport=httpx.MockTransport(broken))
    async with httpx.AsyncClient(transport=breakers) as client:
        for _ in range(3):
            with pytest.raises(KeyError):
                await client.get("http://example.invalid/")
    assert breakers.circuits["http://example.invalid:80"].state is CircuitState.CLOSED


class RecordingTransport(httpx.AsyncBaseTransport):
    """A transport that records whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(204)

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.anyio
async def test_closing_the_client_closes_the_wrapped_transport(clock: FakeClock) -> None:
    """The client's close reaches the wrapped transport, as does aclose()."""
    inner = RecordingTransport()
    async with httpx.AsyncClient(transport=transport(clock, transport=inner)) as client:
        assert (await client.get("https://api.example.com/")).status_code == 204
    assert inner.closed
    inner = RecordingTransport()
    await transport(clock, transport=inner).aclose()
    assert inner.closed


def test_default_key_is_the_origin(clock: FakeClock) -> None:
    """The default circuit name is scheme://host:port, default ports filled in and IPv6
    hosts bracketed."""
    breakers = sync_transport(clock, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    with httpx.Client(transport=breakers) as client:
        for url in ("https://API.example.com/a?b", "http://example.com:8080/", "http://[::1]/"):
            client.get(url)
    assert set(breakers.circuits) == {
        "https://api.example.com:443",
        "http://example.com:8080",
        "http://[::1]:80",
    }


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("key", {"key": "payments"}),
        ("on_circuit_open", {"on_circuit_open": 42}),
        ("config", {"config": {"failure_threshold": 2}}),
        ("persistence_store", {"persistence_store": object()}),
    ],
)
def test_bad_arguments_fail_at_construction(field: str, kwargs: dict[str, Any]) -> None:
    """Bad arguments raise CircuitBreakerConfigError naming the field, before any request."""
    for cls in (CircuitBreakerTransport, SyncCircuitBreakerTransport):
        with pytest.raises(CircuitBreakerConfigError) as caught:
            cls(**kwargs)
        assert caught.value.field == field


# -- the sync transport, through httpx.Client ----------------------------------------------


def test_sync_client_trips_rejects_and_recovers(clock: FakeClock, downstream: Downstream) -> None:
    """httpx.Client through SyncCircuitBreakerTransport: 5xx trips, the open circuit makes
    no connection, one probe past recovery_timeout closes it."""
    breakers = sync_transport(clock)
    with httpx.Client(transport=breakers) as client:
        downstream.behaviour = 503
        for _ in range(2):
            response = client.get(downstream.url)
            assert (response.status_code, response.text) == (503, "downstream says 503")
        with pytest.raises(CircuitBreakerOpenError):
            client.get(downstream.url)
        assert downstream.seen == (2, 2)
        downstream.behaviour = 200
        clock.advance(10)
        assert client.get(downstream.url).status_code == 200
        assert downstream.seen == (3, 3)
    assert breakers.circuits[downstream.origin].state is CircuitState.CLOSED


def test_sync_client_connection_refused_trips(clock: FakeClock, dead_url: str) -> None:
    """Connect errors count in the sync transport too."""
    with httpx.Client(transport=sync_transport(clock)) as client:
        for _ in range(2):
            with pytest.raises(httpx.ConnectError):
                client.get(dead_url)
        with pytest.raises(CircuitBreakerOpenError):
            client.get(dead_url)


@pytest.mark.parametrize("flavour", ["plain", "async"])
def test_sync_client_fallback(clock: FakeClock, downstream: Downstream, flavour: str) -> None:
    """A plain or async on_circuit_open serves the sync client too."""

    def plain(request: httpx.Request, *, circuit: CircuitInfo) -> httpx.Response:
        return httpx.Response(200, text=f"stale {circuit.state.value}")

    async def asynchronous(request: httpx.Request, *, circuit: CircuitInfo) -> httpx.Response:
        return plain(request, circuit=circuit)

    fallback = plain if flavour == "plain" else asynchronous
    with httpx.Client(transport=sync_transport(clock, on_circuit_open=fallback)) as client:
        downstream.behaviour = 500
        for _ in range(2):
            client.get(downstream.url)
        assert client.get(downstream.url).text == "stale OPEN"
    assert downstream.seen == (2, 2)


def test_sync_transport_close_closes_wrapped(clock: FakeClock) -> None:
    """Closing httpx.Client closes the wrapped sync transport."""
    closed: list[bool] = []

    class Inner(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(204)

        def close(self) -> None:
            closed.append(True)

    with httpx.Client(transport=sync_transport(clock, transport=Inner())) as client:
        client.get("http://example.com/")
    assert closed == [True]


# -- imports ------------------------------------------------------------------------------


def test_import_aiocircuit_never_imports_httpx() -> None:
    """`import aiocircuit` (and aiocircuit.contrib) leaves httpx unimported."""
    code = "import sys, aiocircuit, aiocircuit.contrib; print('httpx' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_missing_httpx_names_the_fix() -> None:
    """Without httpx, importing the integration says which pip install fixes it."""
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "try:\n    import aiocircuit.contrib.httpx\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install httpx" in result.stdout, result.stderr


def test_all_is_sorted_and_reports_public_module() -> None:
    """__all__ is sorted, complete, and its names live in aiocircuit.contrib.httpx."""
    import aiocircuit.contrib.httpx as module

    assert module.__all__ == sorted(module.__all__)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", "") == module.__name__
    }
    assert (
        public
        == set(module.__all__)
        == {
            "CircuitBreakerTransport",
            "SyncCircuitBreakerTransport",
        }
    )
