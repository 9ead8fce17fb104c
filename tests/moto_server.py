"""moto's DynamoDB API on loopback, for tests against a real DynamoDB wire protocol.

Two flavours:

- ``ThreadedMotoServer`` (moto's own, one thread per request) for general use;
- a single-threaded server around the same moto app, which also counts requests per
  DynamoDB operation. moto does not make a conditional update atomic under concurrent
  requests (about 1 race in 100 lets two writers both win), so tests that assert exactly
  one winner use this one; real DynamoDB is atomic. Request counts are taken here, at
  the server, not in aiocircuit's own code.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ThreadedEndpoint:
    """moto's ThreadedMotoServer on 127.0.0.1, on a free port."""

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()


class CountingEndpoint:
    """A single-threaded moto server on 127.0.0.1 that counts requests per operation.

    ``stop()`` and ``start()`` take it down and bring it back on the same port, keeping
    its tables (the moto app and its backends live in this process).
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._app = DomainDispatcherApplication(create_backend_app)
        self._port = 0
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.start()
        self.url = f"http://127.0.0.1:{self._port}"

    def _counting(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        self.counts[target.rpartition(".")[2] or "unknown"] += 1
        return self._app(environ, start_response)

    def start(self) -> None:
        self._server = make_server(
            "127.0.0.1",
            self._port,
            self._counting,
            threaded=False,
            request_handler=MotoRequestHandler,
        )
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()

    def reset_counts(self) -> None:
        self.counts.clear()
