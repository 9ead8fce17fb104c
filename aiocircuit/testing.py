"""Helpers for testing code that uses aiocircuit, without sleeping.

``FakeClock`` replaces both clocks a breaker reads::

    clock = FakeClock()
    breaker = CircuitBreaker("payments", clock=clock)
    ...
    clock.advance(30)  # the recovery timeout has passed
"""

from __future__ import annotations

import threading

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that moves only when told to. Thread-safe.

    ``monotonic()`` starts at ``monotonic_start``; ``time()`` starts at ``wall_start``
    (Unix seconds); ``advance(seconds)`` moves both forward together;
    ``step_wall(seconds)`` steps the Unix clock alone.
    """

    __slots__ = ("_lock", "_monotonic", "_wall")

    def __init__(self, wall_start: float = 1_800_000_000.0, monotonic_start: float = 1000.0):
        self._lock = threading.Lock()
        self._wall = float(wall_start)
        self._monotonic = float(monotonic_start)

    def monotonic(self) -> float:
        """The fake monotonic time."""
        return self._monotonic

    def time(self) -> float:
        """The fake Unix time."""
        return self._wall

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError(f"seconds: a clock cannot go backwards, got {seconds!r}")
        with self._lock:
            self._monotonic += seconds
            self._wall += seconds

    def step_wall(self, seconds: float) -> None:
        """Step the Unix clock alone by ``seconds``, either way, as an operator, NTP
        or a resumed VM does; the monotonic clock does not move."""
        with self._lock:
            self._wall += seconds
