"""Run a short piece of work to its end even when its caller is interrupted.

A store write that takes or gives back a probe lease changes what the whole fleet
believes; the process must learn its answer, or it holds a lease it does not know about
(and rejects every call, forever) or forgets one it does hold. So such a write and the
bookkeeping of its answer run to their end, and an interruption that arrives meanwhile
is delivered right after: deferred by at most the store's timeout, never lost.

Each driver needs its own way to defer:

* trio, and anyio cancel scopes on asyncio: a shielded cancel scope;
* asyncio's own ``Task.cancel()`` (and everything built on it: ``asyncio.timeout``,
  ``wait_for``, ``TaskGroup``, aiohttp's timeouts), which passes through anyio's shield:
  the work runs in a task of its own, which the caller waits for through
  ``asyncio.shield`` and keeps waiting for if cancelled;
* the sync shim: the work runs on the portal's event loop, and the calling thread keeps
  waiting for it if an exception (a signal handler's, ``KeyboardInterrupt``) is raised
  into it while it waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ._portal import start_on_portal

T = TypeVar("T")

Completed = tuple[T, BaseException | None]
"""The work's result, and the interruption that arrived while it ran (``None``: none)."""


async def complete(work: Callable[[], Awaitable[T]]) -> Completed[T]:
    """Await ``work()`` to its end; return its result and any cancellation that came
    meanwhile, for the caller to re-raise once it has acted on the result."""
    with anyio.CancelScope(shield=True):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            completed: Completed[T] = (await work(), None)  # trio: the shield defers all
        else:
            completed = await _complete_on(loop, work)
    return completed


async def _complete_on(
    loop: asyncio.AbstractEventLoop, work: Callable[[], Awaitable[T]]
) -> Completed[T]:
    task = asyncio.ensure_future(work(), loop=loop)
    interrupted: BaseException | None = None
    while True:
        try:
            return await asyncio.shield(task), interrupted
        except asyncio.CancelledError as exc:
            if task.cancelled():
                raise  # the work itself was cancelled: its loop is shutting down
            interrupted = exc  # meant for the caller: deliver it when the work ends


def complete_blocking(work: Callable[[], Awaitable[T]]) -> Completed[T]:
    """Run ``work()`` on the sync shim's portal and wait for its end, even if an
    exception is raised into this thread while it waits; return that exception with the
    result, for the caller to re-raise once it has acted on the result."""
    future = start_on_portal(work)
    interrupted: BaseException | None = None
    while True:
        try:
            return future.result(), interrupted
        except BaseException as exc:
            if future.done() and not future.cancelled() and future.exception() is exc:
                if interrupted is not None:
                    raise interrupted from exc
                raise  # the work's own exception
            interrupted = exc  # raised into this thread: deliver it when the work ends
