"""Circuit breakers for httpx, as a transport (``pip install 'aiocircuit[httpx]'``).

::

    transport = CircuitBreakerTransport(persistence_store=store)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get("https://payments.example.com/charges")

A transport sits below everything a client does per request (auth, redirects, cookies,
event hooks), so each HTTP exchange, each redirect hop included, is one call through
the circuit of its origin, and an open circuit rejects the request before the wrapped
transport opens or borrows a connection. ``SyncCircuitBreakerTransport`` does the same
for ``httpx.Client`` through the breaker's sync shim.

What counts as a failure, by default:

* a response with status >= 500. It is still returned to the caller, body unread,
  exactly as the wrapped transport produced it;
* ``httpx.TransportError``: connect errors, timeouts, protocol errors, a dropped
  connection.

A ``config`` with its own ``result_predicate`` or ``failure_predicate`` replaces the
corresponding rule. Its ``handled_exceptions`` add to the transport errors and its
``ignored_exceptions`` take away from them. The body of a response is read by the
client after the transport returns, so an error while streaming a body is outside the
circuit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised in an environment without it
    raise ImportError(
        "aiocircuit.contrib.httpx needs httpx: pip install httpx "
        "(or pip install 'aiocircuit[httpx]')"
    ) from exc

from .._breaker import CircuitBreaker
from .._circuit import CircuitTransition
from .._clock import Clock
from .._config import CircuitBreakerConfig
from .._errors import CircuitBreakerOpenError
from ..persistence._base import PersistenceStore
from ._circuits import (
    CircuitRegistry,
    check_options,
    fallback_or_raise,
    fast_path_failed,
    http_config,
    origin_key,
)

__all__ = ["CircuitBreakerTransport", "SyncCircuitBreakerTransport"]

_KeyFunction = Callable[[httpx.Request], str]
"""``key(request) -> str``: the name of the circuit a request goes through."""

_Send = Callable[[httpx.Request], httpx.Response]


def _origin(request: httpx.Request) -> str:
    url = request.url
    return origin_key(url.scheme, url.host, url.port)


def _is_server_error(response: httpx.Response) -> bool:
    return response.status_code >= 500


def _config(config: CircuitBreakerConfig | None) -> CircuitBreakerConfig:
    return http_config(
        config, transport_errors=(httpx.TransportError,), is_failure_response=_is_server_error
    )


class CircuitBreakerTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` that sends each request through a circuit.

    Args:
        transport: the transport that does the I/O; ``httpx.AsyncHTTPTransport()`` when
            omitted. Closing this transport closes it.
        persistence_store: where circuit state is shared, as for
            :class:`~aiocircuit.CircuitBreaker` (the process-wide in-memory store when
            omitted). Transports with the same store and keys share circuits.
        config: thresholds and timeouts for every circuit; the HTTP failure rules (see
            the module docstring) are filled into the predicates it leaves unset.
        key: ``key(request) -> str`` names the circuit a request goes through; the
            default is the origin, ``"https://api.example.com:443"``. A circuit is
            created on a key's first request and kept for the transport's life, so keys
            should be few: a service or an origin, not a URL.
        on_circuit_open: ``on_circuit_open(request, *, circuit)``, plain or async, is
            called when the circuit rejects a request. It may return an
            ``httpx.Response`` to hand to the caller instead (no connection is made), or
            ``None`` to raise :class:`~aiocircuit.CircuitBreakerOpenError` after all.
        on_transition: called with each :class:`~aiocircuit.CircuitTransition` of any
            circuit; ``circuit_name`` tells the circuits apart.
        clock: the clocks every circuit reads; :class:`aiocircuit.testing.FakeClock` in
            tests.
    """

    __slots__ = ("_transport", "_key", "_on_circuit_open", "_circuits", "_judge_by_status")

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        persistence_store: PersistenceStore | None = None,
        config: CircuitBreakerConfig | None = None,
        key: _KeyFunction | None = None,
        on_circuit_open: Callable[..., Any] | None = None,
        on_transition: Callable[[CircuitTransition], Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._on_circuit_open = check_options(
            persistence_store=persistence_store,
            key=key,
            on_circuit_open=on_circuit_open,
            on_transition=on_transition,
        )
        self._key: _KeyFunction = _origin if key is None else key
        config = _config(config)
        # The closed fast path tests the default result rule inline (fast_path_failed).
        self._judge_by_status = config.result_predicate is _is_server_error
        self._circuits: CircuitRegistry[CircuitBreaker] = CircuitRegistry(
            lambda breaker: breaker,
            persistence_store=persistence_store,
            config=config,
            on_transition=on_transition,
            clock=clock,
        )
        self._transport = httpx.AsyncHTTPTransport() if transport is None else transport

    @property
    def circuits(self) -> Mapping[str, CircuitBreaker]:
        """The circuits this transport has made so far, by key (a read-only live view):
        for ``state``, ``info()``, ``force_open()`` and the rest."""
        return self._circuits.breakers

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through its circuit and the wrapped transport."""
        breaker = self._circuits.get(self._key(request))
        try:
            # The closed fast path, run in this frame, as the aiohttp middleware does: one
            # frame fewer to resume through at each suspension than through call().
            if (started := breaker.fast_start()) is not None:
                try:
                    response = await self._transport.handle_async_request(request)
                except BaseException as exc:
                    await breaker.fast_failed(exc)
                    raise
                if fast_path_failed(breaker, response, response.status_code, self._judge_by_status):
                    await breaker.fast_failed(None)
                elif not breaker.fast_succeeded(started):
                    await breaker.fast_succeeded_slow(started)
                return response
            return await breaker.call(self._transport.handle_async_request, request)
        except CircuitBreakerOpenError as exc:
            if self._on_circuit_open is None or exc.circuit.name != breaker.name:
                raise
            fallback = await self._on_circuit_open.acall(request, circuit=exc.circuit)
            return fallback_or_raise(fallback, exc, httpx.Response, self._on_circuit_open)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._transport.aclose()

    async def __aenter__(self) -> CircuitBreakerTransport:
        await self._transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._transport.__aexit__(exc_type, exc_value, traceback)


class SyncCircuitBreakerTransport(httpx.BaseTransport):
    """:class:`CircuitBreakerTransport` for ``httpx.Client``: an ``httpx.BaseTransport``
    wrapping another (``httpx.HTTPTransport()`` when omitted), through the breaker's
    sync shim. Same arguments and defaults; an async ``on_circuit_open`` or an
    async-only store runs on aiocircuit's shared portal thread. Safe to share between
    threads, as ``httpx.Client`` is.
    """

    __slots__ = ("_transport", "_key", "_on_circuit_open", "_circuits")

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        persistence_store: PersistenceStore | None = None,
        config: CircuitBreakerConfig | None = None,
        key: _KeyFunction | None = None,
        on_circuit_open: Callable[..., Any] | None = None,
        on_transition: Callable[[CircuitTransition], Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._on_circuit_open = check_options(
            persistence_store=persistence_store,
            key=key,
            on_circuit_open=on_circuit_open,
            on_transition=on_transition,
        )
        self._key: _KeyFunction = _origin if key is None else key
        wrapped = httpx.HTTPTransport() if transport is None else transport
        self._transport = wrapped

        def protect(breaker: CircuitBreaker) -> tuple[CircuitBreaker, _Send]:
            # The decorator is the sync shim's call form that sees the returned value
            # (`with breaker:` cannot judge a 5xx response); decided once per circuit.
            @breaker
            def send(request: httpx.Request) -> httpx.Response:
                return wrapped.handle_request(request)

            return breaker, send

        self._circuits: CircuitRegistry[tuple[CircuitBreaker, _Send]] = CircuitRegistry(
            protect,
            persistence_store=persistence_store,
            config=_config(config),
            on_transition=on_transition,
            clock=clock,
        )

    @property
    def circuits(self) -> Mapping[str, CircuitBreaker]:
        """The circuits this transport has made so far, by key (a read-only live view)."""
        return self._circuits.breakers

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through its circuit and the wrapped transport."""
        breaker, send = self._circuits.get(self._key(request))
        try:
            return send(request)
        except CircuitBreakerOpenError as exc:
            if self._on_circuit_open is None or exc.circuit.name != breaker.name:
                raise
            fallback = self._on_circuit_open.call_sync(request, circuit=exc.circuit)
            return fallback_or_raise(fallback, exc, httpx.Response, self._on_circuit_open)

    def close(self) -> None:
        """Close the wrapped transport."""
        self._transport.close()

    def __enter__(self) -> SyncCircuitBreakerTransport:
        self._transport.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self._transport.__exit__(exc_type, exc_value, traceback)
