"""The breaker: the public facade of one circuit, in every call form.

``CircuitBreaker`` is what users hold: the decorator, ``async with`` / ``with``,
``call()``, ``info()`` and the operator's controls. Each call form has its closed fast
path written here, inline: while the circuit is closed and its cached record fresh, a
call costs one monotonic clock read compared with ``machine.fast_deadline``, the call,
and one counter store. Everything else is a slow path, written once as a flow in
:mod:`._flow` and pumped by its async runner (anyio only, so asyncio and trio) or its
sync runner (the shim, for plain ``def`` code).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import os
import threading
import types
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast, overload

import anyio

from ._circuit import CircuitInfo, CircuitState, CircuitTransition
from ._clock import SYSTEM_CLOCK, Clock
from ._config import CircuitBreakerConfig
from ._errors import (
    CircuitBreakerConfigError,
    CircuitBreakerOpenError,
)
from ._flow import CircuitFlows
from ._gateway import StoreGateway
from ._hooks import Hook, is_async_callable
from ._state import (
    ADMIT_CLOSED,
    Admit,
    CircuitStateMachine,
    Outcome,
    Reject,
)
from .persistence._base import PersistenceStore
from .persistence._memory import InMemoryPersistence

logger = logging.getLogger("aiocircuit")

P = ParamSpec("P")
T = TypeVar("T")

DISABLE_ENV_VAR = "AIOCIRCUIT_DISABLED"
_TRUTHY = frozenset({"1", "true", "yes", "on"})

# Every breaker of this process, so a forked child can drop what belongs to its parent.
_breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()

_default_store: InMemoryPersistence | None = None
_default_store_lock = threading.Lock()


def default_store() -> InMemoryPersistence:
    """The process-wide in-memory store used by breakers given no store."""
    global _default_store
    with _default_store_lock:
        if _default_store is None:
            _default_store = InMemoryPersistence()
        return _default_store


def _new_owner_id() -> str:
    # Fresh per lease: neither per thread nor per process, because under asyncio many
    # tasks share a thread. The pid makes it readable in the store.
    return f"{os.getpid()}#{uuid.uuid4().hex}"


@dataclass(slots=True)
class _Entry:
    """One open ``with``/``async with`` block that needs its admission remembered: a
    probe, or a block under ``call_timeout``. Kept in a context variable, so it is per
    task and per thread."""

    breaker: CircuitBreaker
    admitted: Admit
    started: float
    scope: anyio.CancelScope | None
    parent: _Entry | None


_open_entries: contextvars.ContextVar[_Entry | None] = contextvars.ContextVar(
    "aiocircuit_open_entries", default=None
)


class CircuitBreaker:
    """A circuit breaker around calls to one downstream.

    Use it as a decorator on an ``async def`` (or on a plain ``def``: the sync shim), as
    ``async with breaker:`` (or ``with breaker:``), or as ``await breaker.call(fn, ...)``.

    Args:
        name: the circuit's name, its key in the store. Breakers with the same name
            and store share one circuit, as processes of a fleet do.
        persistence_store: where the circuit's state is shared; a process-wide
            :class:`~aiocircuit.persistence.InMemoryPersistence` when omitted.
        config: thresholds and timeouts; ``CircuitBreakerConfig()`` when omitted.
        on_circuit_open: called as ``on_circuit_open(*args, circuit=CircuitInfo,
            **kwargs)`` instead of raising :class:`CircuitBreakerOpenError` when a call
            is rejected; its return value is the call's result. Plain or async.
        on_transition: called with each :class:`CircuitTransition` this breaker makes,
            in order. Plain or async; its exceptions are logged and swallowed.
        clock: the clocks to read; :class:`aiocircuit.testing.FakeClock` in tests.

    Setting the environment variable ``AIOCIRCUIT_DISABLED=1`` before a breaker is
    created makes it a pass-through.
    """

    __slots__ = (
        "name",
        "config",
        "_store",
        "_machine",
        "_monotonic",
        "_time",
        "_flows",
        "_disabled",
        "_handled",
        "_ignored",
        "_failure_predicate",
        "_result_predicate",
        "_call_timeout",
        "_slow_call",
        "_plain_success",
        "_gateway",
        "_on_circuit_open",
        "_open_entry_count",
        "__weakref__",
    )

    def __init__(
        self,
        name: str,
        persistence_store: PersistenceStore | None = None,
        *,
        config: CircuitBreakerConfig | None = None,
        on_circuit_open: Callable[..., Any] | None = None,
        on_transition: Callable[[CircuitTransition], Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise CircuitBreakerConfigError("name", f"must be a non-empty str, got {name!r}")
        if config is None:
            config = CircuitBreakerConfig()
        elif not isinstance(config, CircuitBreakerConfig):
            raise CircuitBreakerConfigError(
                "config", f"must be a CircuitBreakerConfig, got {type(config).__name__}"
            )
        if persistence_store is None:
            persistence_store = default_store()
        elif not isinstance(persistence_store, PersistenceStore):
            raise CircuitBreakerConfigError(
                "persistence_store",
                f"must be a PersistenceStore, got {type(persistence_store).__name__}",
            )
        for field, hook in (("on_circuit_open", on_circuit_open), ("on_transition", on_transition)):
            if hook is not None and not callable(hook):
                raise CircuitBreakerConfigError(field, f"must be callable, got {hook!r}")
        self.name = name
        self.config = config
        self._store = persistence_store
        clock = SYSTEM_CLOCK if clock is None else clock
        self._monotonic = clock.monotonic
        self._time = clock.time
        self._disabled = os.environ.get(DISABLE_ENV_VAR, "").strip().lower() in _TRUTHY
        if self._disabled:
            logger.warning(
                "circuit %r is disabled by %s: calls pass through unprotected; "
                "intended for development and tests only",
                name,
                DISABLE_ENV_VAR,
            )
        self._handled = config.handled_exceptions
        self._ignored = config.ignored_exceptions
        self._failure_predicate = config.failure_predicate
        self._result_predicate = config.result_predicate
        self._call_timeout = config.call_timeout
        self._gateway = StoreGateway(
            persistence_store, name, timeout=config.store_timeout, monotonic=clock.monotonic
        )
        self._on_circuit_open = None if on_circuit_open is None else Hook(on_circuit_open)
        self._slow_call = config.slow_call_duration
        self._machine = CircuitStateMachine(
            name,
            failure_threshold=config.failure_threshold,
            success_threshold=config.success_threshold,
            recovery_timeout=config.recovery_timeout,
            cache_max_age=config.local_cache_max_age,
            new_owner_id=_new_owner_id,
            fast_path_enabled=not self._disabled and config.call_timeout is None,
            failure_rate_threshold=config.failure_rate_threshold,
            sliding_window=config.sliding_window,
            minimum_calls=config.minimum_calls,
            slow_call_duration=config.slow_call_duration,
            recovery_backoff=config.recovery_backoff,
            max_recovery_timeout=config.max_recovery_timeout,
            recovery_jitter=config.recovery_jitter,
            enforce=config.enforce,
            call_timeout=config.call_timeout,
        )
        if config.slow_call_duration is not None:
            closed_success = self._machine.closed_success
            monotonic = clock.monotonic

            def timed_tally(started: float) -> bool:
                return closed_success(started, monotonic())

            self._machine.tally = timed_tally
        # A success on the closed fast path needs nothing but a reset of the streak.
        self._plain_success = self._machine.tally is None and config.result_predicate is None
        self._flows = CircuitFlows(
            name,
            self._machine,
            persistence_store,
            self._gateway,
            on_transition=None if on_transition is None else Hook(on_transition),
            monotonic=clock.monotonic,
            time=clock.time,
        )
        self._open_entry_count = 0
        _breakers.add(self)

    def _forget_parent_process(self) -> None:
        # In a forked child: the parent's lease, pending read, locks held by its other
        # threads and cached record are not ours. Start as a fresh environment would.
        self._flows.forget_parent_process()
        self._open_entry_count = 0
        self._machine.forget_process_state()
        self._gateway.forget()

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state.value}>"

    # -- state -----------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The last state this breaker knows of. No I/O: it may be up to
        ``local_cache_max_age`` old, or older if no call has come since."""
        return self._machine.record.state

    async def info(self) -> CircuitInfo:
        """Read the circuit from the store now and return it.

        Raises :class:`CircuitBreakerPersistenceError` if the store fails or takes
        longer than ``store_timeout``.
        """
        started = self._machine.writes_seen
        read = functools.partial(self._store.read, self.name)
        record = await self._gateway.ask(f"reading circuit {self.name!r} failed", read)
        with self._flows.lock:
            self._machine.on_read(record, self._monotonic(), started=started)
            return self._machine.info(self._monotonic(), self._time())

    # -- operator control ------------------------------------------------------------

    async def force_open(self) -> CircuitInfo:
        """Open the circuit for the whole fleet until :meth:`reset`: every call is
        rejected and no probe runs. Other processes obey within
        ``local_cache_max_age``. Raises :class:`CircuitBreakerPersistenceError` if the
        store fails."""
        return await self._aforce(CircuitState.FORCED_OPEN)

    async def force_closed(self) -> CircuitInfo:
        """Close the circuit for the whole fleet until :meth:`reset`: every call runs
        and failures never trip it."""
        return await self._aforce(CircuitState.FORCED_CLOSED)

    async def reset(self) -> CircuitInfo:
        """Return the circuit to an ordinary CLOSED state with no history, lifting any
        forced state and ending any recovery in progress."""
        return await self._aforce(CircuitState.CLOSED)

    async def _aforce(self, state: CircuitState) -> CircuitInfo:
        wall = self._time()
        forced = state is not CircuitState.CLOSED
        force = functools.partial(
            self._store.force,
            self.name,
            state=state,
            opened_at=wall if state is CircuitState.FORCED_OPEN else None,
            expires_at=None if forced else self._machine.expires_at(wall),
        )
        what = f"forcing circuit {self.name!r} to {state.value} failed"
        record = await self._gateway.ask(what, force)
        with self._flows.lock:
            self._machine.on_forced(record, self._monotonic())
        await self._flows.arun(self._flows.dispatch())
        return self._machine.info(self._monotonic(), self._time())

    # -- outcome classification ------------------------------------------------------

    def _classify(self, exc: BaseException) -> Outcome:
        if not isinstance(exc, Exception):
            return Outcome.IGNORED  # cancellation, KeyboardInterrupt, SystemExit, ...
        if self._failure_predicate is not None:
            counted = self._predicate_says(self._failure_predicate, exc, otherwise=True)
            return Outcome.FAILURE if counted else Outcome.IGNORED
        if self._handled is not None:
            return Outcome.FAILURE if isinstance(exc, self._handled) else Outcome.IGNORED
        if self._ignored is not None:
            return Outcome.IGNORED if isinstance(exc, self._ignored) else Outcome.FAILURE
        return Outcome.FAILURE

    def _judge(self, result: object) -> Outcome:
        """The outcome of a call that returned ``result`` (``result_predicate`` set)."""
        assert self._result_predicate is not None
        failed = self._predicate_says(self._result_predicate, result, otherwise=False)
        return Outcome.FAILURE if failed else Outcome.SUCCESS

    def _predicate_says(
        self, predicate: Callable[[Any], bool], value: object, *, otherwise: bool
    ) -> bool:
        # A broken predicate must not break the call: the outcome is then what it would
        # be without one (an exception counts, a returned value does not).
        try:
            return bool(predicate(value))
        except Exception:
            logger.warning(
                "circuit %r: predicate %r raised; %s",
                self.name,
                predicate,
                "counting the call as a failure" if otherwise else "counting the call as a success",
                exc_info=True,
            )
            return otherwise

    def _success(self, started: float, ended: float) -> Outcome:
        """The outcome of a call that returned normally: a failure if it was slow."""
        slow = self._slow_call
        return Outcome.FAILURE if slow is not None and ended - started > slow else Outcome.SUCCESS

    async def _succeeded_slow(self, started: float, ended: float) -> None:
        # A closed fast-path success the tally could not count alone.
        outcome = self._success(started, ended)
        await self._flows.arun(self._flows.record(ADMIT_CLOSED, outcome))

    def _timeout_error(self) -> TimeoutError:
        return TimeoutError(
            f"call through circuit {self.name!r} exceeded call_timeout={self._call_timeout}s"
        )

    async def _arejected(self, reject: Reject, args: Any, kwargs: Any) -> Any:
        if self._on_circuit_open is None:
            raise CircuitBreakerOpenError(reject.circuit, reject.retry_after)
        return await self._on_circuit_open.acall(*args, circuit=reject.circuit, **kwargs)

    # -- the async API ---------------------------------------------------------------

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``await fn(*args, **kwargs)`` through the circuit.

        Returns its result, or ``on_circuit_open``'s when the call is rejected; raises
        its exception untouched, or :class:`CircuitBreakerOpenError` when rejected and
        no ``on_circuit_open`` is set. ``fn`` must return an awaitable: anything else,
        or arguments that do not bind, raise ``TypeError`` and count for nothing, since
        nothing reached the downstream.
        """
        machine = self._machine
        monotonic = self._monotonic  # a local: CPython 3.11 cannot specialise self._monotonic()
        started = monotonic()
        if started < machine.fast_deadline:
            awaitable = fn(*args, **kwargs)  # arguments that do not bind raise here, uncounted
            try:
                result = await awaitable
            except BaseException as exc:
                if not inspect.isawaitable(awaitable):
                    raise _not_awaitable(fn, awaitable) from None
                await self.fast_failed(exc)
                raise
            if self._plain_success:
                machine.failures = 0
            elif self._result_predicate is not None and self._judge(result) is Outcome.FAILURE:
                await self.fast_failed(None)
            elif (tally := machine.tally) is None or tally(started):
                machine.failures = 0
            else:
                await self._succeeded_slow(started, monotonic())
            return result
        return cast(T, await self._acall_slow(fn, args, kwargs))

    # -- low level: the closed fast path, for integrations --------------------------

    def fast_start(self) -> float | None:
        """Low level, no I/O: like :meth:`fast_admits`, but returns the monotonic time
        the call starts at (to hand to :meth:`fast_succeeded`), or ``None`` when the
        call must go through :meth:`call`."""
        now = self._monotonic()
        return now if now < self._machine.fast_deadline else None

    def fast_admits(self) -> bool:
        """Low level, no I/O: whether a call may run now without admission, because the
        circuit is closed, this process's cached record of it is fresh and no
        ``call_timeout`` is set. An integration that wraps calls in its own frame (the
        HTTP transports do) runs the call when this is true and reports how it ended
        with :meth:`fast_succeeded` or :meth:`fast_failed`; otherwise it goes through
        :meth:`call`, which admits, rejects or probes."""
        return self._monotonic() < self._machine.fast_deadline

    def fast_succeeded(self, started: float | None = None) -> bool:
        """Low level: a call run after :meth:`fast_start` returned ``started`` (or after
        :meth:`fast_admits`: ``None``, its duration unknown) succeeded. No I/O.

        Returns True when it is counted. False means the success needs the slow path
        (a slow call, which counts as a failure, or one that trips the failure-rate
        window): record it with ``await breaker.fast_succeeded_slow(started)``."""
        machine = self._machine
        tally = machine.tally
        if tally is not None and not tally(self._monotonic() if started is None else started):
            return False
        machine.failures = 0
        return True

    async def fast_succeeded_slow(self, started: float | None = None) -> None:
        """Low level: record a success that :meth:`fast_succeeded` returned False for.
        May trip the circuit."""
        ended = self._monotonic()
        await self._succeeded_slow(ended if started is None else started, ended)

    async def fast_failed(self, exc: BaseException | None) -> None:
        """Low level: a call run after :meth:`fast_admits` raised ``exc`` (counted or
        not as the configuration says), or, with ``exc`` None, returned a result that
        counts as a failure (see :meth:`result_fails`). May trip the circuit.

        Every closed fast path records a failure through this; the breaker's own fast
        paths record a success in place, as :meth:`fast_succeeded` does (a call would
        cost more than the rest of the path)."""
        outcome = Outcome.FAILURE if exc is None else self._classify(exc)
        await self._flows.arun(self._flows.record(ADMIT_CLOSED, outcome))

    def result_fails(self, result: object) -> bool:
        """Low level: whether ``result_predicate`` counts ``result`` as a failure (a
        predicate that raises counts as a success, with a warning)."""
        return self._result_predicate is not None and self._judge(result) is Outcome.FAILURE

    async def _acall_slow(self, fn: Callable[..., Awaitable[Any]], args: Any, kwargs: Any) -> Any:
        if self._disabled:
            return await fn(*args, **kwargs)
        decision = await self._flows.arun(self._flows.admit())
        if isinstance(decision, Reject):
            return await self._arejected(decision, args, kwargs)
        try:
            awaitable = fn(*args, **kwargs)
            if not inspect.isawaitable(awaitable):
                raise _not_awaitable(fn, awaitable)
        except BaseException:
            await self._flows.arun(self._flows.release(decision))  # nothing reached the downstream
            raise
        timeout = self._call_timeout
        timed_out = False
        started = self._monotonic()
        try:
            if timeout is None:
                result = await awaitable
            else:
                with anyio.move_on_after(timeout) as scope:
                    result = await awaitable
                timed_out = scope.cancelled_caught
        except BaseException as exc:
            await self._flows.arun(self._flows.record(decision, self._classify(exc)))
            raise
        if timed_out:
            await self._flows.arun(self._flows.record(decision, Outcome.FAILURE))
            raise self._timeout_error()
        outcome = self._success(started, self._monotonic())
        if outcome is Outcome.SUCCESS and self._result_predicate is not None:
            outcome = self._judge(result)
        await self._flows.arun(self._flows.record(decision, outcome))
        return result

    async def __aenter__(self) -> CircuitBreaker:
        monotonic = self._monotonic  # a local: CPython 3.11 cannot specialise self._monotonic()
        if monotonic() < self._machine.fast_deadline or self._disabled:
            if self._slow_call is not None and not self._disabled:
                self._push_entry(ADMIT_CLOSED, with_timeout_scope=False)  # to time it
            return self
        decision = await self._flows.arun(self._flows.admit())
        if isinstance(decision, Reject):
            raise CircuitBreakerOpenError(decision.circuit, decision.retry_after)
        try:
            self._push_entry(decision, with_timeout_scope=True)
        except BaseException:
            await self._flows.arun(self._flows.release(decision))
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None and not self._open_entry_count:
            # The closed fast path: a success, nothing tracked.
            machine = self._machine
            if (tally := machine.tally) is None or tally(now := self._monotonic()):
                machine.failures = 0
            else:
                await self._succeeded_slow(now, now)
            return
        entry = self._pop_entry() if self._open_entry_count else None
        if entry is None:
            if exc is None:
                if not self.fast_succeeded():
                    await self.fast_succeeded_slow()
            elif not self._disabled:
                await self._flows.arun(self._flows.record(ADMIT_CLOSED, self._classify(exc)))
            return
        timed_out = False
        if entry.scope is not None:
            # What __exit__ returns says whether it swallowed an exception, which trio's
            # scopes also report when there was none; cancelled_caught says whether the
            # scope's own deadline cancelled the block, as anyio documents.
            entry.scope.__exit__(exc_type, exc, tb)
            timed_out = entry.scope.cancelled_caught
        if timed_out:
            await self._flows.arun(self._flows.record(entry.admitted, Outcome.FAILURE))
            raise self._timeout_error() from None
        if exc is None:
            outcome = self._success(entry.started, self._monotonic())
        else:
            outcome = self._classify(exc)
        await self._flows.arun(self._flows.record(entry.admitted, outcome))

    def _push_entry(self, admitted: Admit, *, with_timeout_scope: bool) -> None:
        # Only admissions whose exit needs more than "closed, untimed" are tracked, so
        # the closed fast path never touches the context variable unless slow calls count.
        if (
            admitted.probe_owner is None
            and admitted.shadowed is None
            and self._call_timeout is None
            and self._slow_call is None
        ):
            return
        scope: anyio.CancelScope | None = None
        if self._call_timeout is not None and with_timeout_scope:
            scope = anyio.move_on_after(self._call_timeout)
            scope.__enter__()
        with self._flows.lock:
            self._open_entry_count += 1
        parent = _open_entries.get()
        _open_entries.set(_Entry(self, admitted, self._monotonic(), scope, parent))

    def _pop_entry(self) -> _Entry | None:
        entry = _open_entries.get()
        previous = None
        while entry is not None and entry.breaker is not self:
            previous, entry = entry, entry.parent
        if entry is None:
            return None
        if previous is None:
            _open_entries.set(entry.parent)
        else:
            previous.parent = entry.parent
        with self._flows.lock:
            self._open_entry_count -= 1
        return entry

    # -- the sync shim ---------------------------------------------------------------

    def _rejected_sync(self, reject: Reject, args: Any, kwargs: Any) -> Any:
        if self._on_circuit_open is None:
            raise CircuitBreakerOpenError(reject.circuit, reject.retry_after)
        return self._on_circuit_open.call_sync(*args, circuit=reject.circuit, **kwargs)

    def _call_sync_slow(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        if self._disabled:
            return fn(*args, **kwargs)
        decision = self._flows.run(self._flows.admit())
        if isinstance(decision, Reject):
            return self._rejected_sync(decision, args, kwargs)
        timeout = self._call_timeout
        started = self._monotonic()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._flows.run(self._flows.record(decision, self._classify(exc)))
            raise
        if inspect.isawaitable(result):
            self._flows.run(self._flows.release(decision))
            raise _returned_awaitable(fn, result)
        # A blocking call cannot be cancelled: one that overran counts as a failure,
        # but its result is not thrown away.
        ended = self._monotonic()
        if timeout is not None and ended - started > timeout:
            outcome = Outcome.FAILURE
        else:
            outcome = self._success(started, ended)
            if outcome is Outcome.SUCCESS and self._result_predicate is not None:
                outcome = self._judge(result)
        self._flows.run(self._flows.record(decision, outcome))
        return result

    def __enter__(self) -> CircuitBreaker:
        monotonic = self._monotonic  # a local: CPython 3.11 cannot specialise self._monotonic()
        if monotonic() < self._machine.fast_deadline or self._disabled:
            if self._slow_call is not None and not self._disabled:
                self._push_entry(ADMIT_CLOSED, with_timeout_scope=False)  # to time it
            return self
        decision = self._flows.run(self._flows.admit())
        if isinstance(decision, Reject):
            raise CircuitBreakerOpenError(decision.circuit, decision.retry_after)
        try:
            self._push_entry(decision, with_timeout_scope=False)
        except BaseException:
            self._flows.run(self._flows.release(decision))
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None and not self._open_entry_count:
            # The closed fast path: a success, nothing tracked.
            machine = self._machine
            if (tally := machine.tally) is None or tally(self._monotonic()):
                machine.failures = 0
            else:
                self._flows.run(self._flows.record(ADMIT_CLOSED, Outcome.SUCCESS))
            return
        entry = self._pop_entry() if self._open_entry_count else None
        if entry is None:
            if exc is None:
                if not self.fast_succeeded():
                    self._flows.run(self._flows.record(ADMIT_CLOSED, Outcome.SUCCESS))
            elif not self._disabled:
                self._flows.run(self._flows.record(ADMIT_CLOSED, self._classify(exc)))
            return
        ended = self._monotonic()
        if exc is not None:
            outcome = self._classify(exc)
        elif self._call_timeout is not None and ended - entry.started > self._call_timeout:
            outcome = Outcome.FAILURE
        else:
            outcome = self._success(entry.started, ended)
        self._flows.run(self._flows.record(entry.admitted, outcome))

    # -- decorator -------------------------------------------------------------------

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate ``fn``: an ``async def`` (also a ``functools.partial`` of one, or an
        object with an ``async def __call__``) is protected natively, a plain ``def``
        through the sync shim. The choice is made once, here.

        A plain ``def`` that returns a coroutine (a wrapper around an ``async def``)
        cannot be told apart here; its calls raise ``TypeError`` rather than leave the
        coroutine unprotected. Make it an ``async def``, or mark it with
        ``inspect.markcoroutinefunction``.
        """
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise TypeError(
                f"@CircuitBreaker cannot protect the generator function {fn!r}: only a "
                "call that returns (or awaits to) a result can succeed or fail"
            )
        if is_async_callable(fn):
            return self._wrap_async(cast(Callable[P, Coroutine[Any, Any, Any]], fn))
        return self._wrap_sync(fn)

    def _wrap_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        machine = self._machine
        monotonic = self._monotonic
        record = self.fast_failed
        judge = None if self._result_predicate is None else self._judge
        slow = self._acall_slow
        succeeded_slow = self._succeeded_slow
        plain = self._plain_success

        @functools.wraps(fn)
        async def protected(*args: P.args, **kwargs: P.kwargs) -> T:
            started = monotonic()
            if started < machine.fast_deadline:
                coroutine = fn(*args, **kwargs)  # arguments that do not bind raise, uncounted
                try:
                    result = await coroutine
                except BaseException as exc:
                    await record(exc)
                    raise
                if plain:
                    machine.failures = 0
                elif judge is not None and judge(result) is Outcome.FAILURE:
                    await record(None)
                elif (tally := machine.tally) is None or tally(started):
                    machine.failures = 0
                else:
                    await succeeded_slow(started, monotonic())
                return result
            return cast(T, await slow(fn, args, kwargs))

        return protected

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        machine = self._machine
        monotonic = self._monotonic
        flows = self._flows
        classify = self._classify
        success = self._success
        plain = self._plain_success
        judge = None if self._result_predicate is None else self._judge
        slow = self._call_sync_slow
        coroutine_type = types.CoroutineType  # an identity test: the cheapest on this path

        @functools.wraps(fn)
        def protected(*args: P.args, **kwargs: P.kwargs) -> T:
            started = monotonic()
            if started < machine.fast_deadline:
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    flows.run(flows.record(ADMIT_CLOSED, classify(exc)))
                    raise
                if type(result) is coroutine_type:  # a plain wrapper of an async def
                    raise _returned_awaitable(fn, result)
                if plain:
                    machine.failures = 0
                elif judge is not None and judge(result) is Outcome.FAILURE:
                    flows.run(flows.record(ADMIT_CLOSED, Outcome.FAILURE))
                elif (tally := machine.tally) is None or tally(started):
                    machine.failures = 0
                else:
                    flows.run(flows.record(ADMIT_CLOSED, success(started, monotonic())))
                return result
            return cast(T, slow(fn, args, kwargs))

        return protected


def _not_awaitable(fn: Callable[..., Any], value: object) -> TypeError:
    return TypeError(
        f"CircuitBreaker.call() needs a function that returns an awaitable; {fn!r} returned "
        f"{type(value).__name__}. Protect a blocking function with the sync shim "
        "(`@breaker` on it, or `with breaker:`). Nothing was counted."
    )


def _returned_awaitable(fn: Callable[..., Any], value: object) -> TypeError:
    if inspect.iscoroutine(value):
        value.close()  # never awaited: close it rather than leave a warning behind
    return TypeError(
        f"{fn!r} is a plain function but returned {type(value).__name__}, an awaitable the "
        "breaker cannot protect from a plain function's wrapper. Make it an `async def`, "
        "mark it with inspect.markcoroutinefunction, or use `await breaker.call(fn, ...)`. "
        "Nothing was counted."
    )


def _forget_parent_process_in_child() -> None:
    # The forking thread's open `with breaker:` blocks belong to the parent: exiting one
    # in the child must not report the parent's probe.
    global _default_store_lock
    _default_store_lock = threading.Lock()  # a parent's thread may have held it
    _open_entries.set(None)
    for breaker in list(_breakers):
        breaker._forget_parent_process()


os.register_at_fork(after_in_child=_forget_parent_process_in_child)


def circuit_breaker(
    name: str,
    persistence_store: PersistenceStore | None = None,
    on_circuit_open: Callable[..., Any] | None = None,
    on_transition: Callable[[CircuitTransition], Any] | None = None,
    config: CircuitBreakerConfig | None = None,
) -> CircuitBreaker:
    """Decorator factory with the parameters of Powertools' ``circuit_breaker``.

    ``@circuit_breaker("payments", store)`` protects an ``async def`` or a plain ``def``;
    it returns the :class:`CircuitBreaker`, which is itself the decorator.
    """
    return CircuitBreaker(
        name,
        persistence_store,
        config=config,
        on_circuit_open=on_circuit_open,
        on_transition=on_transition,
    )
