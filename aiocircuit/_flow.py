"""The slow paths of a circuit, written once for both drivers.

Admitting a call that the closed fast path did not, recording how an admitted call
ended, and firing the transitions these make are each one generator: a *flow*. A flow
decides with the state machine and yields the operations it needs carried out (read
the store, make an election, apply a write, deliver a transition to the hook); a
*runner* carries each out and sends back its answer, or throws in what it raised. The
async runner awaits; the sync runner blocks (the shim). So the rules, and their error
branches, exist once, and each driver is a short pump: the pattern of httpx's auth
flows.

What must survive an interruption is in the operations, not the flows: an election or
a write runs to its end and is applied (see :mod:`._completion`), and its answer comes
back together with any interruption that arrived meanwhile, for the flow to act on (a
won lease that its call will never use is given back) before re-raising it.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import anyio

from ._circuit import CircuitTransition
from ._completion import complete, complete_blocking
from ._gateway import StoreFailed, StoreGateway
from ._hooks import Hook
from ._portal import run_blocking
from ._state import ADMIT_CLOSED, REFRESH, Admit, CircuitStateMachine, Outcome, Reject
from ._writes import Election, Followup
from .persistence._base import BlockingStoreOps, CircuitRecord, PersistenceStore, WriteResult

logger = logging.getLogger("aiocircuit")

T = TypeVar("T")


class Read:
    """Operation: refresh the cached record from the store. Answer: ``True`` if it
    was read, ``False`` if the store failed (fail open)."""

    __slots__ = ()


READ = Read()


@dataclass(frozen=True, slots=True)
class Elect:
    """Operation: make a probe's election (or renewal) and apply its answer. Answer:
    the decision and the interruption that arrived meanwhile, if any."""

    write: Election


@dataclass(frozen=True, slots=True)
class Apply:
    """Operation: make a write that follows a call and apply its answer. Answer: the
    interruption that arrived meanwhile, if any."""

    write: Followup


@dataclass(frozen=True, slots=True)
class Deliver:
    """Operation: hand a transition to ``on_transition``. Answer: nothing; what the
    hook raised is thrown into the flow."""

    transition: CircuitTransition


Operation = Read | Elect | Apply | Deliver
Flow = Generator[Operation, Any, T]


@dataclass(slots=True)
class _ReadFlight:
    """A store read in progress that concurrent callers on the same loop share."""

    thread: int
    done: anyio.Event
    outcome: bool | None = None  # True read, False failed, None abandoned (cancelled)


class CircuitFlows:
    """One circuit's slow paths and their two runners."""

    __slots__ = (
        "name",
        "machine",
        "lock",
        "store",
        "gateway",
        "on_transition",
        "_monotonic",
        "_time",
        "_read_flight",
        "_dispatching",
    )

    def __init__(
        self,
        name: str,
        machine: CircuitStateMachine,
        store: PersistenceStore,
        gateway: StoreGateway,
        *,
        on_transition: Hook | None,
        monotonic: Callable[[], float],
        time: Callable[[], float],
    ) -> None:
        self.name = name
        self.machine = machine
        self.lock = threading.Lock()
        self.store = store
        self.gateway = gateway
        self.on_transition = on_transition
        self._monotonic = monotonic
        self._time = time
        self._read_flight: _ReadFlight | None = None
        self._dispatching = False

    def forget_parent_process(self) -> None:
        """In a forked child: locks held by the parent's other threads, its pending
        read and its dispatcher are not ours."""
        self.lock = threading.Lock()
        self._read_flight = None
        self._dispatching = False

    # -- the flows -------------------------------------------------------------------

    def admit(self) -> Flow[Admit | Reject]:
        """Decide whether a call runs: as a closed call, as the probe, or not at all."""
        machine = self.machine
        refreshed = False
        while True:
            with self.lock:
                decision = machine.admit(self._monotonic(), self._time(), refreshed=refreshed)
            if decision is REFRESH:
                if not (yield READ):
                    return ADMIT_CLOSED  # the store failed: fail open
                refreshed = True
                continue
            if isinstance(decision, Election):
                elected, interrupted = yield Elect(decision)
                try:
                    if interrupted is not None:
                        raise interrupted
                    yield from self.dispatch()
                except BaseException:
                    yield from self.release(elected)  # the call will not run: give it back
                    raise
                return cast(Admit | Reject, elected)
            return cast(Admit | Reject, decision)

    def record(self, admitted: Admit, outcome: Outcome) -> Flow[None]:
        """Record how an admitted call ended, with the write that calls for, if any."""
        with self.lock:
            write = self.machine.on_outcome(admitted, outcome, self._monotonic(), self._time())
        if write is None:
            return
        interrupted = yield Apply(write)
        if interrupted is not None:
            raise interrupted  # the next caller to make a transition fires the hooks
        yield from self.dispatch()

    def release(self, admitted: Admit | Reject) -> Flow[None]:
        """Give back a probe lease won for a call that will not run."""
        if isinstance(admitted, Admit) and admitted.probe_owner is not None:
            yield from self.record(admitted, Outcome.IGNORED)

    def dispatch(self) -> Flow[None]:
        """Fire queued transitions, in order, if no one else is firing them."""
        with self.lock:
            if self._dispatching or not self.machine.transitions:
                return
            self._dispatching = True
        try:
            while (transition := self._next_transition()) is not None:
                if self.on_transition is not None:
                    try:
                        yield Deliver(transition)
                    except Exception:
                        logger.warning(
                            "on_transition hook for circuit %r raised; ignoring",
                            self.name,
                            exc_info=True,
                        )
                with self.lock:
                    self.machine.transitions.popleft()
        except BaseException:
            with self.lock:
                self._dispatching = False  # cancelled mid-hook: the next caller fires it
            raise

    def _next_transition(self) -> CircuitTransition | None:
        # Checking for more and stepping down are one step under the lock, so a
        # transition queued by another caller is never left without a dispatcher. The
        # transition stays queued until its hook has run: a dispatcher cancelled
        # mid-hook leaves it to the next one, so none is lost (one may be delivered
        # twice, the first time interrupted).
        with self.lock:
            if self.machine.transitions:
                return self.machine.transitions[0]
            self._dispatching = False
            return None

    # -- the async runner ----------------------------------------------------------------

    async def arun(self, flow: Flow[T]) -> T:
        """Pump ``flow``, carrying out its operations on the running event loop."""
        send: Any = flow.send
        answer: Any = None
        while True:
            try:
                operation = send(answer)
            except StopIteration as done:
                return cast(T, done.value)
            try:
                answer = await self._aperform(operation)
                send = flow.send
            except BaseException as exc:
                answer, send = exc, flow.throw

    async def _aperform(self, operation: Operation) -> Any:
        if isinstance(operation, Read):
            return await self._arefresh()
        if isinstance(operation, (Elect, Apply)):
            settled, interrupted = await complete(functools.partial(self._amake, operation.write))
            return _answer(operation, settled, interrupted)
        assert self.on_transition is not None
        return await self.on_transition.acall(operation.transition)

    async def _arefresh(self) -> bool:
        """Read the store into the cache, sharing a read already in flight on this
        loop. False: the store failed, fail open."""
        while True:
            flight = self._read_flight
            thread = threading.get_ident()
            if flight is None or flight.thread != thread:
                break
            await flight.done.wait()
            if flight.outcome is not None:
                return flight.outcome
            # The reader was cancelled before it finished: read again ourselves.
        flight = _ReadFlight(thread, anyio.Event())
        self._read_flight = flight
        started = self.machine.writes_seen
        try:
            flight.outcome = self._install(await self.gateway.read(), started)
            return flight.outcome
        finally:
            if self._read_flight is flight:
                self._read_flight = None
            flight.done.set()

    def _install(self, record: CircuitRecord | StoreFailed | None, started: int) -> bool:
        """Install a record read when ``writes_seen`` was ``started``; False: the read
        failed (fail open)."""
        if isinstance(record, StoreFailed):
            return False
        with self.lock:
            self.machine.on_read(record, self._monotonic(), started=started)
        return True

    def _settle(
        self, write: Election | Followup, result: WriteResult | None
    ) -> Admit | Reject | None:
        """Apply a write's answer (``None``: it failed): an election's decides the call."""
        with self.lock:
            if isinstance(write, Election):
                return self.machine.on_election(write, result, self._monotonic())
            self.machine.on_write(write, result, self._monotonic())
            return None

    async def _amake(self, write: Election | Followup) -> Admit | Reject | None:
        # Made, and its answer applied, whatever happens to the caller meanwhile: the
        # runners call this through complete().
        result: WriteResult | None = None
        try:
            result = await self.gateway.write(write)
        finally:
            settled = self._settle(write, result)
        return settled

    def _make(self, ops: BlockingStoreOps, write: Election | Followup) -> Admit | Reject | None:
        # _amake on a store's blocking twin: nothing to wait for, nothing to defer.
        result: WriteResult | None = None
        try:
            result = self.gateway.write_blocking(ops, write)
        finally:
            settled = self._settle(write, result)
        return settled

    # -- the sync runner (the shim) ----------------------------------------------------

    def run(self, flow: Flow[T]) -> T:
        """Pump ``flow``, blocking: on the store's blocking twin when it has one (the
        in-memory store), else through the shim's portal."""
        send: Any = flow.send
        answer: Any = None
        while True:
            try:
                operation = send(answer)
            except StopIteration as done:
                return cast(T, done.value)
            try:
                answer = self._perform(operation)
                send = flow.send
            except BaseException as exc:
                answer, send = exc, flow.throw

    def _perform(self, operation: Operation) -> Any:
        ops = self.store._blocking_ops()
        if isinstance(operation, Read):
            if ops is None:
                return run_blocking(self._arefresh)
            started = self.machine.writes_seen
            return self._install(self.gateway.read_blocking(ops), started)
        if isinstance(operation, (Elect, Apply)):
            if ops is None:
                work = functools.partial(self._amake, operation.write)
                settled, interrupted = complete_blocking(work)
            else:
                settled, interrupted = self._make(ops, operation.write), None
            return _answer(operation, settled, interrupted)
        assert self.on_transition is not None
        return self.on_transition.call_sync(operation.transition)


def _answer(
    operation: Elect | Apply, settled: Admit | Reject | None, interrupted: BaseException | None
) -> Any:
    """What a flow receives for a write: an election's decision with the interruption,
    or for a follow-up the interruption alone."""
    return (settled, interrupted) if isinstance(operation, Elect) else interrupted
