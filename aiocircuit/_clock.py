"""The two clocks a breaker reads, behind one injectable object.

Local deadlines (cache freshness) use a monotonic clock; timestamps written to a shared
store use Unix time, because other hosts read them. Tests replace both at once with
:class:`aiocircuit.testing.FakeClock`.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What a breaker needs to tell the time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def time(self) -> float:
        """Unix time in seconds."""
        ...


class SystemClock:
    """The real clocks: ``time.monotonic`` and ``time.time``."""

    __slots__ = ()

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)


SYSTEM_CLOCK = SystemClock()
