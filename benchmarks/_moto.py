"""moto's DynamoDB API on loopback, in this process, counting requests at the server.

The DynamoDB benchmarks need a real DynamoDB wire protocol and an account of every request
the store made. The test suite has such a server (``tests/moto_server.py``), but ``tests``
is not something a user of aiocircuit gets, so the benchmarks carry their own: a
single-threaded werkzeug server around moto's WSGI app, with a middleware that counts
requests per DynamoDB operation (the ``X-Amz-Target`` header). Counting at the server,
rather than in aiocircuit or in a wrapper around its store, means the figures hold whatever
path a request took inside aiocircuit, aioboto3 or botocore.

Single-threaded, because a healthy circuit should send the server at most one request at a
time per process; a burst would queue here and show in the counts, not be lost.

moto, werkzeug (a moto dependency) and aioboto3 are imported only when a server is made:
a benchmark run without them reports the DynamoDB measurements as not available.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

# Fake credentials and region: nothing may ever reach a real AWS account.
FAKE_AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}

# The DynamoDB operations that change items; everything else a circuit sends is a read.
WRITE_OPERATIONS = frozenset(
    {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
)
READ_OPERATIONS = frozenset(
    {"GetItem", "BatchGetItem", "TransactGetItems", "Query", "Scan"},
)
REQUIREMENTS = ("aioboto3", "moto", "werkzeug")
INSTALL_HINT = "pip install 'aiocircuit[dynamodb]' 'moto[server]'"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def missing_requirements() -> list[str]:
    """The distributions the DynamoDB benchmarks need that are not installed."""
    return [name for name in REQUIREMENTS if importlib.util.find_spec(name) is None]


def use_fake_aws_credentials() -> None:
    """Point this process's AWS configuration at fake credentials and no config files."""
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(FAKE_AWS_ENVIRONMENT)


class CountingMotoServer:
    """A single-threaded moto server on 127.0.0.1 (a free port) counting requests per
    DynamoDB operation in ``counts``. Use as a context manager, or call ``stop()``."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        use_fake_aws_credentials()
        self.counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._app: WSGIApp = DomainDispatcherApplication(create_backend_app)

        class QuietRequestHandler(MotoRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                pass  # one line per request on stderr would drown the report

        self._server = make_server(
            "127.0.0.1", 0, self._counting, threaded=False, request_handler=QuietRequestHandler
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="benchmark-moto-server", daemon=True
        )
        self._thread.start()

    def _counting(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        operation = environ.get("HTTP_X_AMZ_TARGET", "").rpartition(".")[2] or "unknown"
        with self._counts_lock:
            self.counts[operation] += 1
        return self._app(environ, start_response)

    def snapshot(self) -> Counter[str]:
        """A copy of the counts so far; subtract two snapshots to count a stretch."""
        with self._counts_lock:
            return Counter(self.counts)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> CountingMotoServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def reads(counts: Counter[str]) -> int:
    """Requests in ``counts`` that read items."""
    return sum(n for op, n in counts.items() if op in READ_OPERATIONS)


def writes(counts: Counter[str]) -> int:
    """Requests in ``counts`` that write items."""
    return sum(n for op, n in counts.items() if op in WRITE_OPERATIONS)


def describe(counts: Counter[str]) -> str:
    """``GetItem 3, UpdateItem 0``-style text, or ``none``."""
    items = sorted((op, n) for op, n in counts.items() if n)
    return ", ".join(f"{op} {n}" for op, n in items) if items else "none"
