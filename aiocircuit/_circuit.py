"""The public vocabulary of a circuit: its states and the snapshots handed to user code."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CircuitState(str, enum.Enum):
    """The state of a circuit. Members compare equal to their plain string values, which
    are the strings stored in the shared store.

    ``FORCED_OPEN`` and ``FORCED_CLOSED`` are set by an operator
    (``CircuitBreaker.force_open()`` / ``force_closed()``) and hold until ``reset()``: a
    forced-open circuit rejects every call and never probes; a forced-closed one admits
    every call and never trips.
    """

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"
    FORCED_OPEN = "FORCED_OPEN"
    FORCED_CLOSED = "FORCED_CLOSED"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class CircuitInfo:
    """A snapshot of a circuit as a breaker saw it.

    ``failure_count`` is the number of failures that tripped the circuit, in the
    environment that tripped it: the streak, or the failures in its window for a trip on
    the failure rate (0 in states not reached by a trip). ``opened_at`` is in Unix
    seconds, ``None`` while closed. ``open_period`` is how many seconds the current open
    period lasts (``None`` while closed or forced); ``probe_at`` is the Unix time at
    which a probe may start (``None`` unless ``OPEN``).
    """

    name: str
    state: CircuitState
    failure_count: int = 0
    opened_at: float | None = None
    open_period: float | None = None
    probe_at: float | None = None


@dataclass(frozen=True)
class CircuitTransition:
    """A state change made by this breaker, handed to ``on_transition``."""

    circuit_name: str
    from_state: CircuitState
    to_state: CircuitState
    opened_at: float | None = None
