"""Fixtures for the breaker on DynamoDB: asyncio only (aioboto3), tables on the counting
moto server, a raw client to look at items as stored, a slow TCP proxy in front of the
server, a session that counts the clients a store opens and closes, a container
credentials endpoint that can hang, and a stand-in DynamoDB that keeps connections
alive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aioboto3
import pytest

from aiocircuit.persistence.dynamodb import DynamoDBPersistence

from ..moto_server import CountingEndpoint

TableFactory = Callable[..., Awaitable[str]]


@pytest.fixture
def anyio_backend() -> str:
    """aioboto3 runs on asyncio only; the one trio test parametrises this itself."""
    return "asyncio"


@pytest.fixture
def moto(counting_moto: CountingEndpoint) -> CountingEndpoint:
    """The single-threaded, request-counting moto server (see tests/moto_server.py)."""
    return counting_moto


def _run_on_own_loop(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    # In a thread of its own: asyncio.run must not touch the event loop state of the
    # main thread, where the anyio test runner may already have set up its loop.
    with ThreadPoolExecutor(1) as executor:
        executor.submit(asyncio.run, fn()).result()


@pytest.fixture
def table(moto: CountingEndpoint, table_name: str) -> str:
    """A fresh table with the default key schema on the counting server; the server's
    counts start from zero after it is made. Usable from sync and async tests."""
    _run_on_own_loop(lambda: DynamoDBPersistence.create_table(table_name, endpoint_url=moto.url))
    moto.reset_counts()
    return table_name


@pytest.fixture
def make_table(moto: CountingEndpoint, table_name: str) -> TableFactory:
    """``await make_table(**create_table_kwargs)``: a fresh table with the given key
    schema on the counting server; returns its name and resets the server's counts."""

    async def make(**kwargs: Any) -> str:
        await DynamoDBPersistence.create_table(table_name, endpoint_url=moto.url, **kwargs)
        moto.reset_counts()
        return table_name

    return make


@pytest.fixture
async def raw_client(moto: CountingEndpoint) -> AsyncIterator[Any]:
    """A plain aioboto3 DynamoDB client on the counting server, to put and read items
    behind the store's back."""
    async with aioboto3.Session().client("dynamodb", endpoint_url=moto.url) as client:
        yield client


class SlowProxy:
    """A TCP forwarder on 127.0.0.1 that holds every connection ``delay`` seconds before
    forwarding it to ``target_url``: a store that answers, but far too late.

    Runs on the test's event loop. Leaving the ``async with`` block cancels every
    connection it holds and closes every socket, so nothing outlives the test.
    """

    def __init__(self, target_url: str, delay: float) -> None:
        parts = urlsplit(target_url)
        assert parts.hostname is not None
        assert parts.port is not None
        self._target = (parts.hostname, parts.port)
        self._delay = delay
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._closing = False
        self.connections = 0  # connections accepted
        self.forwarded = 0  # connections that got as far as the target
        self.url = ""

    async def __aenter__(self) -> SlowProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        assert self._server is not None
        self._server.close()
        # A connection accepted just before close() may start its handler one loop
        # iteration later: keep cancelling until none is left.
        while True:
            await asyncio.sleep(0)
            if not self._handlers:
                break
            handlers = list(self._handlers)
            for handler in handlers:
                handler.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def active(self) -> int:
        """Connections the proxy still holds."""
        return len(self._handlers)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            if self._closing:
                return
            await asyncio.sleep(self._delay)
            upstream_reader, upstream = await asyncio.open_connection(*self._target)
            self.forwarded += 1
            await asyncio.gather(self._pump(reader, upstream), self._pump(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass  # either side went away: nothing to forward any more
        finally:
            for side in (upstream, writer):
                if side is not None:
                    side.close()
                    with contextlib.suppress(OSError, asyncio.CancelledError):
                        await side.wait_closed()
            self._handlers.discard(task)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()


@pytest.fixture
async def slow_moto(moto: CountingEndpoint) -> AsyncIterator[SlowProxy]:
    """The counting moto server behind a proxy that delays every connection by 5 s."""
    async with SlowProxy(moto.url, delay=5.0) as proxy:
        yield proxy
    assert proxy.active == 0, "the proxy left connections open"


class _TrackedClient:
    """The async context manager of one client, counting its opening and closing."""

    def __init__(self, inner: Any, session: TrackingSession) -> None:
        self._inner = inner
        self._session = session

    async def __aenter__(self) -> Any:
        try:
            client = await self._inner.__aenter__()
        except Exception as exc:  # not cancellation: that is no failure
            self._session.failed.append(exc)
            raise
        self._session.opened += 1
        return client

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self._inner.__aexit__(*exc_info)
        finally:
            self._session.closed += 1


class TrackingSession(aioboto3.Session):  # type: ignore[misc]  # aioboto3 is untyped
    """An ``aioboto3.Session`` (the store's public ``session=`` argument) that counts the
    clients asked of it (``requested``: openings started), those opened, those closed
    again, and keeps the errors of the openings that failed."""

    def __init__(self) -> None:
        super().__init__()
        self.requested = 0
        self.opened = 0
        self.closed = 0
        self.failed: list[BaseException] = []

    def client(self, *args: Any, **kwargs: Any) -> Any:
        self.requested += 1
        return _TrackedClient(super().client(*args, **kwargs), self)


@pytest.fixture
def tracking_session() -> TrackingSession:
    return TrackingSession()


_CONTAINER_CREDENTIALS = json.dumps(
    {
        "AccessKeyId": "testing",
        "SecretAccessKey": "testing",
        "Token": "testing",
        "Expiration": "2099-01-01T00:00:00Z",
    }
)


class CredentialsEndpoint:
    """A container credentials endpoint (what ECS and Lambda SnapStart serve, and what
    botocore's container provider asks when ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` is
    set) on 127.0.0.1, in threads of its own.

    It starts out hanging: every request is accepted and held without an answer, as by a
    metadata service that is stuck. ``serve()`` answers the held requests and all later
    ones with credentials; ``fail()`` answers them with a 500. ``requests`` counts the
    requests received.
    """

    def __init__(self) -> None:
        self.requests = 0
        self._mode = "hang"
        self._changed = threading.Condition()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so a handler never waits on a
            # connection the client has reset.

            def do_GET(self) -> None:
                with endpoint._changed:
                    endpoint.requests += 1
                    endpoint._changed.wait_for(lambda: endpoint._mode != "hang")
                    mode = endpoint._mode
                if mode == "serve":
                    status, body = 200, _CONTAINER_CREDENTIALS
                else:
                    status, body = 500, '{"message": "credentials unavailable"}'
                with contextlib.suppress(OSError):  # the client may have given up
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/creds"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _set(self, mode: str) -> None:
        with self._changed:
            self._mode = mode
            self._changed.notify_all()

    def serve(self) -> None:
        """Answer every held and later request with credentials."""
        self._set("serve")

    def fail(self) -> None:
        """Answer every held and later request with a 500."""
        self._set("fail")

    def stop(self) -> None:
        self._set("fail")  # releases the requests still held
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make this endpoint the environment's only source of credentials: the key
        variables removed, the instance metadata service disabled. Sessions resolve
        credentials on their first client, so call this before that (after making
        tables)."""
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", self.url)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def credentials_endpoint() -> Iterator[CredentialsEndpoint]:
    """A container credentials endpoint that hangs until told otherwise (see
    ``CredentialsEndpoint.install``)."""
    endpoint = CredentialsEndpoint()
    yield endpoint
    endpoint.stop()


class KeepAliveDynamoDB:
    """A stand-in for DynamoDB on 127.0.0.1 that answers every request with ``{}`` (for
    GetItem: no item) over HTTP/1.1 and keeps each connection open afterwards, as real
    DynamoDB does; moto's server closes them. So a client's connection pool holds open
    sockets between operations."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def keep_alive_dynamodb(aws_credentials: None) -> Iterator[KeepAliveDynamoDB]:
    server = KeepAliveDynamoDB()
    yield server
    server.stop()
