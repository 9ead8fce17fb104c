"""DynamoDB clients, one per event loop: opened in the background, let go with the loop.

Opening a client resolves credentials, which may wait on the network (a container or
instance metadata endpoint) for as long as botocore's own retries take: about 9 s when
the endpoint hangs. So it runs in a background task, one per loop, that callers only
wait on: a caller's ``store_timeout`` abandons its wait, not the opening, which the next
operation then finds done instead of starting over.

A client references its loop, so the store keeps its per-loop state in a plain dict: a
weak-keyed one would never let a loop go. A client is closed when its loop shuts down
(``asyncio.run``'s ``shutdown_asyncgens()``) or by ``aclose()``. A loop closed without
shutting down (``new_event_loop()`` / ``run_until_complete()`` / ``close()`` per
invocation) can run nothing any more: the store lets go of what it held there, closing
its sockets by hand, the next time it meets a new loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from .._errors import CircuitBreakerPersistenceError


class LoopClient:
    """A store's client on one event loop: the task opening it, then the client and the
    async context manager that closes it (entered and exited directly).

    ``clients`` is the store's map of these, keyed by loop; an entry leaves it when its
    opening fails (so that the next operation tries afresh) and when it is closed.
    """

    def __init__(
        self,
        clients: dict[asyncio.AbstractEventLoop, LoopClient],
        loop: asyncio.AbstractEventLoop,
        table_name: str,
        session: Any,
        options: Mapping[str, Any],
    ) -> None:
        self._clients = clients
        self._loop = loop
        self._table_name = table_name
        self.client: Any = None
        self._manager: Any = None  # the client's async context manager: closes it
        self._shutdown_hook = self._close_at_shutdown()
        name = f"aiocircuit: opening a DynamoDB client for {table_name!r}"
        opening = self._open(session, options)
        # The opening's context variables, kept to close it in them should its loop
        # close under it (abandon); Python 3.10 cannot say which they are.
        self._variables: contextvars.Context | None = None
        if sys.version_info >= (3, 11):
            self._variables = contextvars.copy_context()
            self._opening = loop.create_task(opening, name=name, context=self._variables)
        else:
            self._opening = loop.create_task(opening, name=name)
        self._opening.add_done_callback(self._opened)

    async def _open(self, session: Any, options: Mapping[str, Any]) -> Any:
        manager = session.client("dynamodb", **options)
        client = await manager.__aenter__()
        # Nothing below suspends, so nothing can interrupt it: the client is recorded, and
        # the shutdown hook started, which registers it with this loop.
        self._manager, self.client = manager, client
        await self._shutdown_hook.asend(None)
        return client

    def _opened(self, opening: asyncio.Task[Any]) -> None:
        # exception() marks the error retrieved: callers who stopped waiting never will.
        if opening.cancelled() or opening.exception() is not None:
            self._leave()

    def _leave(self) -> None:
        if self._clients.get(self._loop) is self:
            del self._clients[self._loop]

    async def wait(self) -> Any:
        """The client, once opened. Waiting is all a caller does: its timeout or
        cancellation abandons the wait, never the opening."""
        opening = self._opening
        if not opening.done():
            # A shield, unlike asyncio.shield: the opening's own end (cancelled by
            # aclose() or the loop's shutdown) is reported below, not raised in this
            # caller as if the caller itself had been cancelled.
            await asyncio.wait((opening,))
        if opening.cancelled():
            raise CircuitBreakerPersistenceError(
                f"opening a DynamoDB client for table {self._table_name!r} failed",
                "cancelled: the store was closed, or its event loop is shutting down",
            )
        exc = opening.exception()
        if exc is not None:
            raise CircuitBreakerPersistenceError(
                f"opening a DynamoDB client for table {self._table_name!r} failed",
                f"{type(exc).__name__}: {exc}",
            ) from exc
        return opening.result()

    async def _close_at_shutdown(self) -> AsyncGenerator[None, None]:
        # Not what holds the client open (this entry does): a hook that the loop's
        # shutdown_asyncgens(), which asyncio.run runs, closes, and so closes the client.
        try:
            yield
        finally:
            await self._close_client()

    async def _close_client(self) -> None:
        self._leave()
        opening = self._opening
        if not opening.done():
            opening.cancel()
            await asyncio.wait((opening,))
        manager, self._manager, self.client = self._manager, None, None
        if manager is not None:
            await manager.__aexit__(None, None, None)

    async def close(self) -> None:
        """Close the client, on its own loop (which is running)."""
        await self._close_client()
        await self._shutdown_hook.aclose()

    def abandon(self, session: Any) -> None:
        """Let go of all this holds, although its loop closed without shutting down.

        Nothing can run on a closed loop any more, so what closing would have scheduled
        there is done here by hand: the client's sockets are closed, and so is a pending
        opening, so that the garbage collector that frees them finds nothing to warn
        about. The shutdown hook, freed with this entry, does nothing on a closed loop.
        ``session`` is the one the opening used.
        """
        opening = self._opening
        if not opening.done():
            # It may be fetching credentials (from a container or instance metadata
            # endpoint). Close that connection first: the opening's own cleanup, run
            # when its coroutine is closed below, then finds nothing left that needs
            # the loop, and completes, instead of failing half-way and leaving
            # aiobotocore's fetcher (which the session keeps) locked for good.
            for http_session in _credential_http_sessions(session):
                _close_on_closed_loop(http_session, self._loop)
            # Its destruction is deliberate: no "Task was destroyed but it is pending!".
            opening._log_destroy_pending = False  # type: ignore[attr-defined]
            # Closed here, where an error is ours to swallow, rather than by the garbage
            # collector; in its own context variables, which aiobotocore resets on the
            # way out.
            close = opening.get_coro().close
            with contextlib.suppress(Exception):
                if self._variables is None:
                    close()
                else:
                    self._variables.run(close)
        if self.client is not None:
            endpoint = getattr(self.client, "_endpoint", None)
            _close_on_closed_loop(getattr(endpoint, "http_session", None), self._loop)
        self._manager = self.client = None


def _credential_http_sessions(session: Any) -> list[Any]:
    """The HTTP sessions of the metadata fetchers among the credential providers of the
    aioboto3 ``session`` (aiobotocore internals: empty if they are not found)."""
    found = []
    with contextlib.suppress(Exception):
        botocore_session = getattr(session, "_session", session)  # aioboto3's, or itself
        for provider in botocore_session.get_component("credential_provider").providers:
            for name in ("_fetcher", "_role_fetcher"):
                http_session = getattr(getattr(provider, name, None), "_session", None)
                if http_session is not None:
                    found.append(http_session)
    return found


def _close_on_closed_loop(http_session: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Close the connections that aiobotocore's ``http_session`` holds on ``loop``, which
    is closed.

    Does synchronously what closing them would have scheduled on the loop: closes each
    connection's socket, and marks aiohttp's connector (so its session) closed. Best
    effort: it reaches into aiobotocore, aiohttp and asyncio internals, and gives up on
    what it does not recognise (the garbage collector then closes that, with a
    ResourceWarning).
    """
    try:
        sessions = list(http_session._sessions.values())
    except Exception:
        return
    for session in sessions:
        with contextlib.suppress(Exception):
            connector = session.connector
            if connector is None or connector._loop is not loop:
                continue
            protocols = [protocol for pool in connector._conns.values() for protocol, _ in pool]
            protocols.extend(connector._acquired)
            for protocol in protocols:
                _close_dead_transport(protocol.transport)
            connector._close()  # with its loop closed, this only marks it closed


def _close_dead_transport(transport: Any) -> None:
    # abort() marks the transport closed, then fails (RuntimeError) to schedule on the
    # closed loop the call that closes its socket: make that call here. An SSL transport
    # wraps the socket transport.
    with contextlib.suppress(Exception):
        transport.abort()
    inner = getattr(getattr(transport, "_ssl_protocol", None), "_transport", None)
    with contextlib.suppress(Exception):
        (inner or transport)._call_connection_lost(None)
