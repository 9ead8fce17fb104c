"""The downstream the HTTP scenarios call: an aiohttp server on 127.0.0.1, in its own process.

A separate OS process, so that the server's work does not share the interpreter (and the
GIL) of the clients being measured, and so that what reaches the downstream is counted
where it arrives, not by the breakers being compared.

Routes:

* ``GET /ok``: 200 ``ok`` at once (the load scenario's call).
* ``GET /c/{name}[?delay_ms=D]``: one call of breaker ``name``. Counted per name as it
  arrives, in 100 ms buckets of wall time; answered after ``D`` ms if given; 503 if an
  outage was on (or ``failing`` set) when it arrived, else 200.
* ``POST /outage?seconds=S[&start_in=D]``: every ``/c/`` call fails from ``D`` seconds
  from now for ``S`` seconds. ``POST /failing?on=1|0``: fail until told otherwise.
* ``GET /stats``: the counts, as JSON. ``POST /reset``: forget them and any outage.

Run as ``python -m benchmarks._downstream``: it prints its port on the first line of
stdout once it listens. :class:`Downstream` starts and stops such a process.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from types import TracebackType
from typing import Any

BUCKET = 0.1  # seconds per bucket of the /c/ counts


def _serve() -> None:
    from aiohttp import web

    calls: defaultdict[str, Counter[int]] = defaultdict(Counter)
    failures: Counter[str] = Counter()
    outage = [0.0, 0.0]  # wall-clock window of failing /c/ calls
    failing = [False]

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def call(request: web.Request) -> web.Response:
        now = time.time()
        name = request.match_info["name"]
        calls[name][int(now / BUCKET)] += 1
        delay = request.query.get("delay_ms")
        if delay:  # a slow downstream: keeps a probe in flight while others arrive
            await asyncio.sleep(float(delay) / 1000)
        if failing[0] or outage[0] <= now < outage[1]:
            failures[name] += 1
            return web.Response(status=503, text="outage")
        return web.Response(text="ok")

    async def start_outage(request: web.Request) -> web.Response:
        start = time.time() + float(request.query.get("start_in", "0"))
        outage[:] = [start, start + float(request.query["seconds"])]
        return web.json_response({"start": outage[0], "end": outage[1]})

    async def set_failing(request: web.Request) -> web.Response:
        failing[0] = request.query.get("on", "1") == "1"
        return web.json_response({"failing": failing[0]})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "bucket": BUCKET,
                "outage": outage,
                "calls": {name: sum(c.values()) for name, c in calls.items()},
                "failures": dict(failures),
                "buckets": {
                    name: {str(b): n for b, n in sorted(c.items())} for name, c in calls.items()
                },
            }
        )

    async def reset(request: web.Request) -> web.Response:
        calls.clear()
        failures.clear()
        outage[:] = [0.0, 0.0]
        failing[0] = False
        return web.json_response({})

    app = web.Application()
    app.add_routes(
        [
            web.get("/ok", ok),
            web.get("/c/{name}", call),
            web.post("/outage", start_outage),
            web.post("/failing", set_failing),
            web.get("/stats", stats),
            web.post("/reset", reset),
        ]
    )

    async def main() -> None:
        # Bind first, so the port can be announced before any client connects.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock, backlog=4096).start()
        print(sock.getsockname()[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Terminate a server process, kill it if it lingers, and reap it."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Downstream:
    """A downstream server process on 127.0.0.1; ``url`` is its base URL. Use as a context
    manager."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._downstream"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line.isdigit():
            self._process.kill()
            raise RuntimeError(f"the downstream server did not start (said {line!r})")
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}"

    def _request(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """``{"calls": {name: n}, "failures": {...}, "buckets": {name: {bucket: n}},
        "bucket": seconds, "outage": [start, end]}`` (buckets: ``int(wall / bucket)``)."""
        result: dict[str, Any] = self._request("GET", "/stats")
        return result

    def outage(self, seconds: float, start_in: float = 0.0) -> tuple[float, float]:
        """Fail every ``/c/`` call for ``seconds`` from ``start_in`` seconds from now;
        returns the wall-clock window."""
        window = self._request("POST", f"/outage?seconds={seconds}&start_in={start_in}")
        return window["start"], window["end"]

    def failing(self, on: bool) -> None:
        """Fail every ``/c/`` call (``on``) until called with ``False``."""
        self._request("POST", f"/failing?on={int(on)}")

    def reset(self) -> None:
        """Forget the counts, the outage and the failing switch."""
        self._request("POST", "/reset")

    def stop(self) -> None:
        stop_process(self._process)

    def __enter__(self) -> Downstream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    _serve()
