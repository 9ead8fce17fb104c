"""User callbacks, plain or async, decided once at registration."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from ._portal import run_blocking


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns an awaitable: coroutine functions, partials of
    them, and instances with an async ``__call__``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004  # instances with an async __call__
    )


class Hook:
    """A callback that the async driver awaits and the sync shim runs to completion."""

    __slots__ = ("fn", "is_async")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.is_async = is_async_callable(fn)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        result = self.fn(*args, **kwargs)
        if self.is_async:
            result = await result
        return result

    def call_sync(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return run_blocking(functools.partial(self.fn, *args, **kwargs))
        return self.fn(*args, **kwargs)
