"""The sync shim's bridge to async code: one blocking portal for the life of the process.

A portal is an event loop in a background thread. Creating one costs a thread start, so
it is made once, on first need, and kept (which suits warm Lambda environments: a store's
client opened on the portal's loop stays warm across invocations). After ``fork`` the
child makes its own; nothing from the parent is reused.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import TypeVar

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal
from anyio.lowlevel import current_token

T = TypeVar("T")

_lock = threading.Lock()
_portal: BlockingPortal | None = None
_portal_cm: AbstractContextManager[BlockingPortal] | None = None


def _check_not_in_event_loop() -> None:
    try:
        current_token()
    except anyio.NoEventLoopError:
        return
    raise RuntimeError(
        "aiocircuit's sync shim was called from a thread that runs an event loop; it "
        "would block that loop on store I/O. Use the async API (`await breaker.call(...)`,"
        " `async with breaker:`, or decorate an `async def`), or run the sync code in a "
        "worker thread (`anyio.to_thread.run_sync`)."
    )


def shared_portal() -> BlockingPortal:
    """The process-wide portal, started on first use."""
    global _portal, _portal_cm
    portal = _portal
    if portal is not None:
        return portal
    with _lock:
        if _portal is None:
            cm = start_blocking_portal(name="aiocircuit-portal")
            _portal = cm.__enter__()
            _portal_cm = cm
        return _portal


def run_blocking(fn: Callable[[], Awaitable[T]]) -> T:
    """Run the async function ``fn`` on the shared portal and wait for its result."""
    _check_not_in_event_loop()
    return shared_portal().call(fn)


def start_on_portal(fn: Callable[[], Awaitable[T]]) -> Future[T]:
    """Start the async function ``fn`` on the shared portal; its future, to wait on."""
    _check_not_in_event_loop()
    return shared_portal().start_task_soon(fn)


def _stop_portal() -> None:
    global _portal, _portal_cm
    with _lock:
        cm, _portal, _portal_cm = _portal_cm, None, None
    if cm is not None:
        cm.__exit__(None, None, None)


# The parent's portal, kept referenced forever in a forked child: dropping the last
# reference would finalise its context manager, which stops the portal by waiting on a
# thread that does not exist in the child, and hangs.
_orphans: list[object] = []


def _forget_portal_after_fork() -> None:
    global _portal, _portal_cm, _lock
    if _portal_cm is not None:
        _orphans.append(_portal_cm)
    _portal = None
    _portal_cm = None
    _lock = threading.Lock()


atexit.register(_stop_portal)
os.register_at_fork(after_in_child=_forget_portal_after_fork)
