"""A real HTTP server on loopback whose behaviour each test controls, counting at the
server every connection it accepts and every request it reads: the proof that an open
circuit rejects a request before any connection is made."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class _Server(ThreadingHTTPServer):
    owner: Downstream

    def process_request(self, request: Any, client_address: Any) -> None:
        self.owner._count("connections")
        super().process_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so the server sees every connection a
    # client makes (no keep-alive pool hiding one).
    server: _Server

    def do_GET(self) -> None:
        downstream = self.server.owner
        downstream._count("requests")
        behaviour = downstream.behaviour
        if behaviour == "drop":
            self.close_connection = True  # no response at all: the client sees a hang-up
            return
        if behaviour == "hang":
            downstream.release.wait(10)
            return
        status = int(behaviour)
        body = f"{downstream.name} says {status}".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Downstream:
    """An HTTP server on 127.0.0.1 (a free port) in a thread.

    ``behaviour`` is a status code (``200``, ``503``, ...), ``"drop"`` (read the request,
    close the connection without a response) or ``"hang"`` (answer nothing until the
    server stops). ``connections`` and ``requests`` count what reached the server.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.behaviour: int | str = 200
        self.connections = 0
        self.requests = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.origin = self.url  # the circuit name the integrations give it by default
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _count(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    @property
    def seen(self) -> tuple[int, int]:
        """(connections, requests) so far."""
        with self._lock:
            return self.connections, self.requests

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def make_downstream() -> Iterator[Callable[[str], Downstream]]:
    """Start loopback servers on demand; all stop when the test ends."""
    started: list[Downstream] = []

    def make(name: str = "downstream") -> Downstream:
        server = Downstream(name)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def downstream(make_downstream: Callable[[str], Downstream]) -> Downstream:
    """One loopback server, answering 200 until told otherwise."""
    return make_downstream("downstream")


@pytest.fixture
def dead_url() -> str:
    """A loopback URL with nothing listening: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def blackhole_url() -> Iterator[str]:
    """A loopback URL where connecting hangs, as with a host whose packets are dropped:
    a listener with a full accept queue (Linux drops further SYNs instead of refusing)."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            filler.connect_ex(address)
        with socket.socket() as probe:
            probe.settimeout(0.2)
            try:
                probe.connect(address)
            except TimeoutError:
                pass
            else:
                pytest.fail("this OS accepts or refuses instead of dropping the SYN: no blackhole")
        yield f"http://127.0.0.1:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
