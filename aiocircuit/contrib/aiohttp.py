"""Circuit breakers for aiohttp, as a client middleware (``pip install
'aiocircuit[aiohttp]'``; aiohttp 3.12 or later).

::

    breakers = CircuitBreakerMiddleware(persistence_store=store)
    async with aiohttp.ClientSession(middlewares=(breakers,)) as session:
        async with session.get("https://payments.example.com/charges") as response:
            ...

aiohttp runs a session's middlewares around each HTTP exchange, just outside the step
that takes a connection from the pool and sends the request: each redirect hop, and
also its one retry of an idempotent request whose connection was dropped (so one call
to a server that hangs up is two failures). Each exchange is one call through the
circuit of its origin, and an open circuit rejects the request before a connection is
made. A middleware, not a trace config: trace callbacks can
observe a request but cannot stop it or hand back another response.

What counts as a failure, by default:

* a response with status >= 500. It is still returned to the caller, body unread;
* ``aiohttp.ClientConnectionError`` (refused, reset or dropped connections, and
  ``ServerTimeoutError``: connect and read timeouts) and ``asyncio.TimeoutError``,
  the session's ``total`` timeout included, even when it expires while connecting
  (where aiohttp shows middlewares a cancellation instead; see ``_TotalTimeout``).

A ``config`` with its own ``result_predicate`` or ``failure_predicate`` replaces the
corresponding rule. Its ``handled_exceptions`` add to those errors and its
``ignored_exceptions`` take away from them. The body is read after the middleware
returns, so an error while reading it is outside the circuit.

aiohttp runs on asyncio only, so this module does too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

try:
    import aiohttp
except ImportError as exc:  # pragma: no cover - exercised in an environment without it
    raise ImportError(
        "aiocircuit.contrib.aiohttp needs aiohttp: pip install aiohttp "
        "(or pip install 'aiocircuit[aiohttp]')"
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

__all__ = ["CircuitBreakerMiddleware"]

_KeyFunction = Callable[[aiohttp.ClientRequest], str]
"""``key(request) -> str``: the name of the circuit a request goes through."""


def _origin(request: aiohttp.ClientRequest) -> str:
    url = request.url
    return origin_key(url.scheme, url.host or "", url.port)


def _is_server_error(response: aiohttp.ClientResponse) -> bool:
    return response.status >= 500


class _TotalTimeout(asyncio.TimeoutError):
    """The session's ``total`` timeout fired while the request was connecting.

    aiohttp enforces that timeout by cancelling the task, and turns the cancellation
    into ``asyncio.TimeoutError`` where it entered its timer: around reading the
    response (so a middleware sees the ``TimeoutError``) and around the whole request,
    outside the middlewares. While connecting (DNS, TCP, TLS, waiting for a pooled
    connection) a middleware sees only ``CancelledError``, which never counts: a
    blackholed host would never trip the circuit. The middleware raises this instead,
    so the breaker counts the timeout (a user's ``failure_predicate`` sees an
    ``asyncio.TimeoutError``), then re-raises the original ``CancelledError`` for
    aiohttp's timer to convert, uncancelling the task, as it always does.
    """

    def __init__(self, cancelled: asyncio.CancelledError) -> None:
        super().__init__("aiohttp's total timeout expired")
        self.cancelled = cancelled
        # Chained here, not only by `raise ... from`: the closed fast path hands it to
        # the breaker without raising it.
        self.__cause__ = cancelled


def _total_timeout_fired(request: aiohttp.ClientRequest) -> bool:
    # Naughty: `_timer` and its `_cancelled` flag are private to aiohttp (3.12-3.14),
    # and no public attribute tells a timeout from any other cancellation. Should they
    # go away, this answers False and a total timeout is treated as a cancellation
    # again: not counted, never miscounted. tests/contrib/test_aiohttp.py pins it.
    timer = getattr(request, "_timer", None)
    return getattr(timer, "_cancelled", False) is True


async def _send(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    try:
        return await handler(request)
    except asyncio.CancelledError as exc:
        if _total_timeout_fired(request):
            raise _TotalTimeout(exc) from exc
        raise


class CircuitBreakerMiddleware:
    """An aiohttp client middleware that sends each request through a circuit: pass it
    as ``aiohttp.ClientSession(middlewares=(CircuitBreakerMiddleware(...),))`` or in
    one request's ``middlewares=``. One instance may serve many sessions; sessions
    that share it share its circuits.

    Args:
        persistence_store: where circuit state is shared, as for
            :class:`~aiocircuit.CircuitBreaker` (the process-wide in-memory store when
            omitted).
        config: thresholds and timeouts for every circuit; the HTTP failure rules (see
            the module docstring) are filled into the predicates it leaves unset.
        key: ``key(request) -> str`` names the circuit an ``aiohttp.ClientRequest``
            goes through; the default is its origin, ``"https://api.example.com:443"``,
            the same names :mod:`aiocircuit.contrib.httpx` uses. A circuit is created on
            a key's first request and kept for the middleware's life, so keys should be
            few: a service or an origin, not a URL.
        on_circuit_open: ``on_circuit_open(request, *, circuit)``, plain or async, is
            called when the circuit rejects a request. It may return an
            ``aiohttp.ClientResponse`` to hand to the caller instead (one fetched from a
            standby origin, say), or ``None`` to raise
            :class:`~aiocircuit.CircuitBreakerOpenError` after all.
        on_transition: called with each :class:`~aiocircuit.CircuitTransition` of any
            circuit; ``circuit_name`` tells the circuits apart.
        clock: the clocks every circuit reads; :class:`aiocircuit.testing.FakeClock` in
            tests.
    """

    __slots__ = ("_key", "_on_circuit_open", "_circuits", "_judge_by_status")

    def __init__(
        self,
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
        config = http_config(
            config,
            transport_errors=(aiohttp.ClientConnectionError, asyncio.TimeoutError),
            is_failure_response=_is_server_error,
        )
        # The closed fast path tests the default result rule inline (fast_path_failed).
        self._judge_by_status = config.result_predicate is _is_server_error
        self._circuits: CircuitRegistry[CircuitBreaker] = CircuitRegistry(
            lambda breaker: breaker,
            persistence_store=persistence_store,
            config=config,
            on_transition=on_transition,
            clock=clock,
        )

    @property
    def circuits(self) -> Mapping[str, CircuitBreaker]:
        """The circuits this middleware has made so far, by key (a read-only live view):
        for ``state``, ``info()``, ``force_open()`` and the rest."""
        return self._circuits.breakers

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """Send ``request`` through its circuit and on down the middleware chain."""
        breaker = self._circuits.get(self._key(request))
        try:
            # CircuitBreaker.call's closed fast path, run in this frame: awaiting the
            # handler here rather than through call and _send spares resuming through
            # those two frames at every suspension of the exchange. Measurable against
            # the ~100 us of client CPU an aiohttp request costs; keep it to this frame.
            if (started := breaker.fast_start()) is not None:
                try:
                    response = await handler(request)
                except asyncio.CancelledError as exc:
                    counted = _TotalTimeout(exc) if _total_timeout_fired(request) else exc
                    await breaker.fast_failed(counted)  # as through _send
                    raise
                except BaseException as exc:
                    await breaker.fast_failed(exc)
                    raise
                if fast_path_failed(breaker, response, response.status, self._judge_by_status):
                    await breaker.fast_failed(None)
                elif not breaker.fast_succeeded(started):
                    await breaker.fast_succeeded_slow(started)
                return response
            return await breaker.call(_send, request, handler)
        except _TotalTimeout as exc:
            raise exc.cancelled from None
        except CircuitBreakerOpenError as exc:
            if self._on_circuit_open is None or exc.circuit.name != breaker.name:
                raise
            fallback = await self._on_circuit_open.acall(request, circuit=exc.circuit)
            return fallback_or_raise(fallback, exc, aiohttp.ClientResponse, self._on_circuit_open)
