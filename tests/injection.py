"""Cancellation injection for tests/test_cancellation.py.

Three parts, none of which knows about the others' details:

* :class:`Injector` records every await point a step passes while it is armed and, at
  one chosen point, cancels the step in one chosen *style* (``fire``) and then yields a
  bounded number of times, so that a cancellation that can be delivered is delivered
  exactly there. A store op that the library shields from its caller still finishes:
  the injector never waits for anything that only the cancellation would end.
  :class:`SignalInjector` does the same for the sync shim, with a signal handler that
  raises in the main thread while it waits on the shim's portal.
* :class:`InjectingStore` is a ``PersistenceStore`` over an ``InMemoryPersistence``
  whose every operation passes two points, ``<op>:before`` (the request is in flight,
  nothing applied yet) and ``<op>:after`` (applied; the answer is in transit). It is
  not an ``InMemoryPersistence``, so the sync shim reaches it through its portal.
* The call forms (``@breaker``, ``async with``, ``call()``, the httpx transport, the
  aiohttp middleware, and the sync shim's ``@breaker`` and ``with``), each reduced to
  "make one call, say how it ended" (:class:`Result`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel

from aiocircuit import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerOpenError,
    CircuitInfo,
    CircuitTransition,
)
from aiocircuit.persistence import (
    CircuitRecord,
    InMemoryPersistence,
    PersistenceStore,
    WriteResult,
)
from aiocircuit.testing import FakeClock

# How often the injector yields after firing: enough for every style to be delivered
# (Task.cancel: 1; a loop-clock jump: 2; a failing TaskGroup sibling: 3; anyio's
# retried delivery: 2), and bounded, so a shielded store op still finishes.
YIELDS = 20

# The caller's deadline in the timeout styles, in loop seconds, and how far the
# injector moves the running loop's clock to pass it. Nothing sleeps: the deadline fires
# at the next loop iteration after the jump.
CALLER_TIMEOUT = 3600.0
CLOCK_JUMP = CALLER_TIMEOUT + 100.0

# store_timeout of every breaker here: beyond the jump, so that the jump fires the
# caller's deadline and nothing else (a 1 s store_timeout in flight would fire too, and
# the write would fail open instead of being cancelled).
STORE_TIMEOUT = 10 * CLOCK_JUMP

# The signal the sync-shim styles raise from (not SIGALRM: pytest-timeout may own it).
INJECTED_SIGNAL = signal.SIGUSR1
# Bound on the real time the portal waits for the main thread's signal handler to run
# (it runs within microseconds; the bound only keeps a broken run from hanging).
SIGNAL_WAIT = 0.25


class DownstreamDown(ConnectionError):
    """The downstream failed: counts as a failure."""


class Ignored(Exception):
    """Raised by the downstream; configured as ``ignored_exceptions``: never counts."""


class SiblingFailed(Exception):
    """Raised by the TaskGroup sibling when the injector fires."""


class SignalTimeout(Exception):
    """What a SIGALRM-style timeout handler raises: an ``Exception``. Not a
    ``TimeoutError``: that is an ``OSError``, which asyncio's own wake-up write
    (``loop.call_soon_threadsafe``, in the shim's hand-off to the portal) catches and
    drops, and the injection would then depend on where the signal landed."""


class SignalInterrupt(BaseException):
    """What a KeyboardInterrupt-like signal handler raises: not an ``Exception``."""


# Innermost Python frames of a thread blocked on a lock, condition, event or future.
_BLOCKED_IN = frozenset({"wait", "result", "acquire", "get"})

# -- the injector ------------------------------------------------------------------------


class Injector:
    """Records the await points of the armed step; fires once, at ``target``.

    A label passed a second time in one step is recorded as ``label#2`` (and so on), and
    ``target`` names an occurrence the same way. ``fire`` is set by the style runner.
    """

    def __init__(self, target: str | None = None) -> None:
        self.target = target
        self.armed = False
        self.points: list[str] = []
        self.fired_at: str | None = None
        self.delivered_at: str | None = None
        self.fire: Callable[[], object] | None = None
        self._seen: Counter[str] = Counter()

    def _hit(self, label: str) -> bool:
        """Record ``label``; True if the cancellation is to be fired here and now."""
        if not self.armed:
            return False
        self._seen[label] += 1
        count = self._seen[label]
        key = label if count == 1 else f"{label}#{count}"
        self.points.append(key)
        if self.fired_at is not None or key != self.target:
            return False
        self.fired_at = key
        return True

    async def point(self, label: str) -> None:
        if not self._hit(label):
            return
        assert self.fire is not None, "no cancellation style installed"
        self.fire()
        try:
            for _ in range(YIELDS):
                await anyio.lowlevel.checkpoint()
        except BaseException:
            self.delivered_at = self.fired_at
            raise

    def point_sync(self, label: str) -> None:
        if self._hit(label):  # pragma: no cover - the async injector has no sync points
            raise AssertionError(f"a sync point {label!r} cannot be cancelled")


class SignalInjector(Injector):
    """The sync shim's injector: at ``target`` it sends :data:`INJECTED_SIGNAL` to the
    main thread, whose handler raises ``exc_type`` there.

    A point on the portal thread (a store op, an async hook) then blocks the portal for
    at most :data:`SIGNAL_WAIT` until the handler has run, so the exception is thrown
    into the main thread while it waits on the portal, with the op still in flight; the
    op then goes on. A point in the main thread (the call's body) waits for the handler
    in short sleeps, which the signal interrupts.
    """

    def __init__(self, target: str | None, exc_type: type[BaseException]) -> None:
        super().__init__(target)
        self.exc_type = exc_type
        self.release = threading.Event()
        self._main = threading.main_thread().ident
        self._pending = False
        self.late = False  # the handler did not run within SIGNAL_WAIT: not injected there

    def handler(self, signum: int, frame: object) -> None:
        if not self._pending:
            return
        self._pending = False
        self.delivered_at = self.fired_at
        self.release.set()
        raise self.exc_type(f"signal at {self.fired_at}")

    def _send(self) -> None:
        assert self._main is not None
        self._pending = True
        signal.pthread_kill(self._main, INJECTED_SIGNAL)

    async def point(self, label: str) -> None:
        if not self._hit(label):
            return
        assert threading.get_ident() != self._main, "an async point runs on the portal"
        self._await_main_blocked()
        self._send()
        if not self.release.wait(SIGNAL_WAIT):
            self.late = True

    def _await_main_blocked(self) -> None:
        """Wait (bounded) until the main thread is blocked waiting for this op's answer,
        not still handing the op to the portal (anyio's ``start_task_soon`` returns only
        after the portal has started the task, so the op may already run here): the
        signal then always lands in the same place, whatever the thread scheduling."""
        deadline = time.monotonic() + SIGNAL_WAIT
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(self._main or 0)
            names = []
            while frame is not None:
                names.append(frame.f_code.co_name)
                frame = frame.f_back
            handing_over = "start_task_soon" in names or "run_sync_from_thread" in names
            if names and names[0] in _BLOCKED_IN and not handing_over:
                return
            time.sleep(0.0002)

    def point_sync(self, label: str) -> None:
        if not self._hit(label):
            return
        self._send()
        deadline = time.monotonic() + SIGNAL_WAIT
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.001)
        if self._pending:
            self.late = True


@contextlib.contextmanager
def signal_handler_installed(injector: SignalInjector) -> Iterator[None]:
    """Install the injector's handler for the duration (main thread only)."""
    previous = signal.signal(INJECTED_SIGNAL, injector.handler)
    try:
        yield
    finally:
        signal.signal(INJECTED_SIGNAL, previous)


# -- the store -------------------------------------------------------------------------


class InjectingStore(PersistenceStore):
    """An ``InMemoryPersistence`` whose every operation passes ``<op>:before`` and
    ``<op>:after``, and yields once in between (the request on the wire). Counts the
    operations in flight, from any thread."""

    def __init__(self, injector: Injector) -> None:
        self.inner = InMemoryPersistence()
        self.injector = injector
        self._idle = threading.Condition()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        with self._idle:
            return self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Block until no operation is in flight (real time, bounded)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    async def _op(self, operation: str, apply: Callable[[], Awaitable[Any]]) -> Any:
        with self._idle:
            self._in_flight += 1
        try:
            await self.injector.point(f"{operation}:before")
            await anyio.lowlevel.checkpoint()
            result = await apply()
            await self.injector.point(f"{operation}:after")
            return result
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    async def read(self, name: str) -> CircuitRecord | None:
        return await self._op("read", lambda: self.inner.read(name))  # type: ignore[no-any-return]

    async def trip(self, name: str, **kwargs: Any) -> WriteResult:
        return await self._op("trip", lambda: self.inner.trip(name, **kwargs))  # type: ignore[no-any-return]

    async def acquire_probe(self, name: str, **kwargs: Any) -> WriteResult:
        return await self._op("acquire_probe", lambda: self.inner.acquire_probe(name, **kwargs))  # type: ignore[no-any-return]

    async def renew_probe(self, name: str, **kwargs: Any) -> WriteResult:
        return await self._op("renew_probe", lambda: self.inner.renew_probe(name, **kwargs))  # type: ignore[no-any-return]

    async def close(self, name: str, **kwargs: Any) -> WriteResult:
        return await self._op("close", lambda: self.inner.close(name, **kwargs))  # type: ignore[no-any-return]

    async def reopen(self, name: str, **kwargs: Any) -> WriteResult:
        return await self._op("reopen", lambda: self.inner.reopen(name, **kwargs))  # type: ignore[no-any-return]

    async def force(self, name: str, **kwargs: Any) -> CircuitRecord:
        return await self._op("force", lambda: self.inner.force(name, **kwargs))  # type: ignore[no-any-return]


# -- the rig: clock, store, downstream, hooks ---------------------------------------------


@dataclass(frozen=True)
class Result:
    """How one call ended, as its caller saw it."""

    kind: str  # "ok", "failed" (counted), "ignored" (not counted), "rejected"
    retry_after: float | None = None  # of the CircuitBreakerOpenError, when one was raised

    def __str__(self) -> str:
        if self.kind == "rejected" and self.retry_after is not None:
            return f"rejected (CircuitBreakerOpenError, retry_after={self.retry_after:g})"
        if self.kind == "rejected":
            return "rejected (on_circuit_open)"
        return self.kind


REJECTED = object()  # what on_circuit_open returns in the breaker's own forms


class Rig:
    """Everything one run of a scenario shares: a fresh clock, store, downstream and
    hooks. ``phase`` tags what the hooks see ("setup", "victim", "healthy")."""

    def __init__(
        self,
        injector: Injector,
        *,
        success_threshold: int,
        with_on_circuit_open: bool,
        async_hooks: bool = True,
    ) -> None:
        self.injector = injector
        self.clock = FakeClock()
        self.store = InjectingStore(injector)
        self.config = CircuitBreakerConfig(
            failure_threshold=1,
            success_threshold=success_threshold,
            recovery_timeout=30,
            local_cache_max_age=5,
            store_timeout=STORE_TIMEOUT,
            ignored_exceptions=(Ignored,),
        )
        self.phase = "setup"
        self.behaviour = "ok"  # of the downstream: "ok", "fail" or "ignored"
        self.downstream_calls = 0
        self.transitions: list[tuple[str, CircuitTransition]] = []
        self.hook_rejections: list[CircuitInfo] = []
        self.with_on_circuit_open = with_on_circuit_open

    # the downstream ------------------------------------------------------------------

    def _outcome(self) -> str:
        if self.behaviour == "fail":
            raise DownstreamDown("downstream down")
        if self.behaviour == "ignored":
            raise Ignored("not the downstream's fault")
        return "ok"

    async def downstream(self) -> str:
        self.downstream_calls += 1
        await self.injector.point("call")
        await anyio.lowlevel.checkpoint()  # the downstream's own I/O
        return self._outcome()

    def downstream_sync(self) -> str:
        self.downstream_calls += 1
        self.injector.point_sync("call")
        return self._outcome()

    # the hooks -----------------------------------------------------------------------

    async def on_transition(self, transition: CircuitTransition) -> None:
        self.transitions.append((self.phase, transition))
        label = f"hook:{transition.from_state.value}->{transition.to_state.value}"
        await self.injector.point(label)

    def on_circuit_open(self, fallback: object) -> Callable[..., Any] | None:
        if not self.with_on_circuit_open:
            return None

        async def on_open(*args: Any, circuit: CircuitInfo, **kwargs: Any) -> object:
            self.hook_rejections.append(circuit)
            await self.injector.point("on_circuit_open")
            return fallback

        return on_open

    def breaker(self, name: str) -> CircuitBreaker:
        """A breaker on this rig's store, clock and hooks, for a call form to drive."""
        return CircuitBreaker(
            name,
            self.store,
            config=self.config,
            on_transition=self.on_transition,
            on_circuit_open=self.on_circuit_open(REJECTED),
            clock=self.clock,
        )

    # the store as it is ----------------------------------------------------------------

    async def stored(self, name: str) -> CircuitRecord | None:
        return await self.store.inner.read(name)

    def stored_sync(self, name: str) -> CircuitRecord | None:
        return anyio.run(self.store.inner.read, name)


# -- the async call forms ---------------------------------------------------------------


class AsyncForm:
    """One way to call through a breaker. ``call()`` makes one call with the rig's
    current downstream behaviour and reports how it ended."""

    name: str
    circuit: str  # the circuit's name in the store

    def __init__(self, rig: Rig) -> None:
        self.rig = rig

    @property
    def breaker(self) -> CircuitBreaker:
        raise NotImplementedError

    async def call(self) -> Result:
        raise NotImplementedError


class BreakerForm(AsyncForm):
    circuit = "victim"

    def __init__(self, rig: Rig, name: str) -> None:
        super().__init__(rig)
        self.name = name
        self._breaker = rig.breaker(self.circuit)
        self._protected = self._breaker(rig.downstream)

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    async def call(self) -> Result:
        try:
            if self.name == "decorator":
                value = await self._protected()
            elif self.name == "call":
                value = await self._breaker.call(self.rig.downstream)
            else:
                async with self._breaker:
                    value = await self.rig.downstream()
        except CircuitBreakerOpenError as exc:
            return Result("rejected", exc.retry_after)
        except DownstreamDown:
            return Result("failed")
        except Ignored:
            return Result("ignored")
        return Result("rejected") if value is REJECTED else Result("ok")


class HttpxForm(AsyncForm):
    """``CircuitBreakerTransport`` over ``httpx.MockTransport``: a 503 counts."""

    name = "httpx"
    circuit = "http://downstream.test:80"

    def __init__(self, rig: Rig) -> None:
        import httpx

        from aiocircuit.contrib.httpx import CircuitBreakerTransport

        super().__init__(rig)
        self._httpx = httpx

        async def handler(request: httpx.Request) -> httpx.Response:
            try:
                await rig.downstream()
            except DownstreamDown:
                return httpx.Response(503)
            return httpx.Response(200)

        self.transport = CircuitBreakerTransport(
            httpx.MockTransport(handler),
            persistence_store=rig.store,
            config=rig.config,
            on_transition=rig.on_transition,
            on_circuit_open=rig.on_circuit_open(None),
            clock=rig.clock,
        )
        self.client = httpx.AsyncClient(transport=self.transport)

    @property
    def breaker(self) -> CircuitBreaker:
        return self.transport.circuits[self.circuit]

    async def call(self) -> Result:
        try:
            response = await self.client.get("http://downstream.test/")
        except CircuitBreakerOpenError as exc:
            return Result("rejected", exc.retry_after)
        except Ignored:
            return Result("ignored")
        return Result("ok") if response.status_code == 200 else Result("failed")

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpForm(AsyncForm):
    """``CircuitBreakerMiddleware`` in front of an inner middleware that is the call's
    body (the point ``call``), against an aiohttp server on 127.0.0.1 answering 200 or
    503. One connection per request (no pool: an idle pooled connection closed by a
    clock jump would be one more failure)."""

    name = "aiohttp"

    def __init__(self, rig: Rig, *, total_timeout: float | None) -> None:
        super().__init__(rig)
        self.total_timeout = total_timeout
        self.circuit = ""
        self.url = ""

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        import aiohttp
        from aiohttp import web

        from aiocircuit.contrib.aiohttp import CircuitBreakerMiddleware

        rig = self.rig
        status = {"next": 200}

        async def handle(request: web.Request) -> web.Response:
            return web.Response(status=status["next"], text="downstream")

        app = web.Application()
        app.router.add_get("/", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/"
        self.circuit = f"http://127.0.0.1:{port}"

        async def body(
            request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
        ) -> aiohttp.ClientResponse:
            try:
                await rig.downstream()
            except DownstreamDown:
                status["next"] = 503
            else:
                status["next"] = 200
            return await handler(request)

        self.middleware = CircuitBreakerMiddleware(
            persistence_store=rig.store,
            config=rig.config,
            on_transition=rig.on_transition,
            on_circuit_open=rig.on_circuit_open(None),
            clock=rig.clock,
        )
        self.session = aiohttp.ClientSession(
            middlewares=(self.middleware, body),
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=self.total_timeout),
        )
        stack.push_async_callback(self.session.close)

    @property
    def breaker(self) -> CircuitBreaker:
        return self.middleware.circuits[self.circuit]

    async def call(self) -> Result:
        try:
            async with self.session.get(self.url) as response:
                await response.read()
                status = response.status
        except CircuitBreakerOpenError as exc:
            return Result("rejected", exc.retry_after)
        except Ignored:
            return Result("ignored")
        return Result("ok") if status == 200 else Result("failed")


@contextlib.asynccontextmanager
async def open_form(name: str, rig: Rig, style: str | None) -> AsyncIterator[AsyncForm]:
    """The async call form ``name`` on ``rig``, with what it needs started."""
    async with contextlib.AsyncExitStack() as stack:
        form: AsyncForm
        if name in ("decorator", "async_with", "call"):
            form = BreakerForm(rig, name)
        elif name == "httpx":
            form = HttpxForm(rig)
            stack.push_async_callback(form.aclose)
        elif name == "aiohttp":
            total = CALLER_TIMEOUT if style == "client_timeout" else None
            form = AiohttpForm(rig, total_timeout=total)
            await form.start(stack)
        else:  # pragma: no cover
            raise ValueError(name)
        yield form


# -- the sync call forms ----------------------------------------------------------------


class SyncForm:
    """``@breaker`` on a plain def, or ``with breaker:``, through the sync shim (its
    portal: the store is not an ``InMemoryPersistence``)."""

    circuit = "victim"

    def __init__(self, rig: Rig, name: str) -> None:
        self.rig = rig
        self.name = name
        self.breaker = rig.breaker(self.circuit)
        self._protected = self.breaker(rig.downstream_sync)

    def call(self) -> Result:
        try:
            if self.name == "sync_decorator":
                value = self._protected()
            else:
                with self.breaker:
                    value = self.rig.downstream_sync()
        except CircuitBreakerOpenError as exc:
            return Result("rejected", exc.retry_after)
        except DownstreamDown:
            return Result("failed")
        except Ignored:
            return Result("ignored")
        return Result("rejected") if value is REJECTED else Result("ok")


# -- the cancellation styles ------------------------------------------------------------


@dataclass
class Victim:
    """How the victim step ended. ``surfaced``: the style's cancellation reached the
    caller as that style shows it; ``finished``: the step's call returned (or raised its
    own outcome) as if nothing had happened."""

    surfaced: bool
    finished: bool
    detail: str
    result: Result | None = None


class LoopClock:
    """Jumps the running asyncio loop's clock forward (``loop.time`` shadowed on the
    instance), so a deadline fires at the next iteration without waiting; undone on
    exit."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def jump(self) -> None:
        loop = asyncio.get_running_loop()
        current = loop.time
        loop.time = lambda: current() + CLOCK_JUMP  # type: ignore[method-assign]
        self._loop = loop

    def undo(self) -> None:
        if self._loop is not None and "time" in vars(self._loop):
            del self._loop.time
        self._loop = None


def _describe(exc: BaseException | None) -> str:
    return "nothing" if exc is None else f"{type(exc).__name__}: {exc}"


async def run_async_victim(
    style: str, injector: Injector, step: Callable[[], Awaitable[Result]], clock: LoopClock
) -> Victim:
    """Run ``step`` as the victim of ``style``; the injector fires the style's
    cancellation at its target."""
    finished = False
    result: Result | None = None

    async def body() -> None:
        nonlocal finished, result
        result = await step()
        finished = True

    def outcome(surfaced: bool, what: str) -> Victim:
        ended = f"step returned {result}" if finished else "step aborted"
        return Victim(surfaced, finished, f"{what}; {ended}", result)

    if style in ("anyio_scope", "trio_scope"):
        if style == "trio_scope":
            import trio

            scope: Any = trio.CancelScope()
        else:
            scope = anyio.CancelScope()
        injector.fire = scope.cancel
        with scope:
            await body()
            await anyio.lowlevel.checkpoint()  # level-triggered: delivered by here at least
        return outcome(bool(scope.cancelled_caught), f"cancelled_caught={scope.cancelled_caught}")

    loop = asyncio.get_running_loop()
    if style == "task_cancel":
        task = loop.create_task(body())
        injector.fire = task.cancel
        await asyncio.wait({task})
        if task.cancelled():
            return outcome(True, "task cancelled")
        return outcome(False, f"task ended with {_describe(task.exception())}")

    if style in ("asyncio_timeout", "wait_for", "client_timeout"):
        injector.fire = clock.jump

        async def timed() -> None:
            if style == "asyncio_timeout":
                async with asyncio.timeout(CALLER_TIMEOUT):  # type: ignore[attr-defined]
                    await body()
            elif style == "wait_for":
                await asyncio.wait_for(body(), CALLER_TIMEOUT)
            else:  # client_timeout: the aiohttp session's own total timeout
                await body()

        task = loop.create_task(timed())
        await asyncio.wait({task})
        if task.cancelled():
            return outcome(False, "task cancelled instead of timing out")
        error = task.exception()
        return outcome(isinstance(error, asyncio.TimeoutError), f"raised {_describe(error)}")

    if style == "taskgroup":
        go = asyncio.Event()
        injector.fire = go.set
        victim: asyncio.Task[None] | None = None

        async def sibling() -> None:
            await go.wait()
            raise SiblingFailed("sibling failed")

        async def grouped() -> None:
            nonlocal victim
            async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
                group.create_task(sibling())
                victim = group.create_task(body())

        task = loop.create_task(grouped())
        await asyncio.wait({task})
        error = None if task.cancelled() else task.exception()
        inner: tuple[BaseException, ...] = getattr(error, "exceptions", ())
        only_sibling = len(inner) == 1 and isinstance(inner[0], SiblingFailed)
        assert victim is not None
        victim_cancelled = victim.done() and victim.cancelled()
        what = f"group raised {_describe(error)}; victim cancelled={victim_cancelled}"
        return outcome(only_sibling and victim_cancelled, what)

    raise ValueError(style)  # pragma: no cover


def run_sync_victim(injector: SignalInjector, step: Callable[[], Result]) -> Victim:
    """Run ``step`` in the main thread; the injector's signal raises ``exc_type`` in it."""
    finished = False
    result: Result | None = None
    caught: BaseException | None = None
    with signal_handler_installed(injector):
        try:
            result = step()
            finished = True
        except injector.exc_type as exc:
            caught = exc
        # A signal still pending here would run the handler, which then does nothing.
        time.sleep(0)
    ended = f"step returned {result}" if finished else "step aborted"
    return Victim(caught is not None, finished, f"caught {_describe(caught)}; {ended}", result)
