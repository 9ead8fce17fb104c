"""The exceptions aiocircuit raises, under one root.

::

    CircuitBreakerError
     ├── CircuitBreakerOpenError         a call was not admitted
     ├── CircuitBreakerConfigError       bad configuration (also a ValueError)
     └── CircuitBreakerPersistenceError  a store failed (chained from the backend's error)
          └── CircuitBreakerUnsupportedBackendError  a store cannot run here at all

The caller's own exceptions are never wrapped: a protected call that raises re-raises
exactly what the downstream raised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._circuit import CircuitInfo


class CircuitBreakerError(Exception):
    """Root of every error aiocircuit raises.

    ``message`` is the first argument; ``details`` joins the rest (or is ``None``), the
    same shape as Powertools' ``CircuitBreakerError``.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        self.message = str(args[0]) if args else ""
        self.details = "".join(str(arg) for arg in args[1:]) or None

    def __str__(self) -> str:
        if self.details:
            return f"{self.message} - ({self.details})"
        return self.message


class CircuitBreakerOpenError(CircuitBreakerError):
    """A call was rejected because its circuit is open (or a probe holds the lease).

    ``circuit`` is the state the breaker acted on; ``retry_after`` is the number of
    seconds until a probe may run (0 when one may run now but another caller holds it).
    """

    def __init__(self, circuit: CircuitInfo, retry_after: float) -> None:
        self.circuit = circuit
        self.retry_after = max(0.0, retry_after)
        super().__init__(
            f"Circuit {circuit.name!r} is {circuit.state.value}; "
            f"retry after {self.retry_after:.3f}s"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.circuit, self.retry_after))


class CircuitBreakerConfigError(CircuitBreakerError, ValueError):
    """A configuration value is invalid; ``field`` names it and the message says what is
    allowed."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.field, self.problem))


class CircuitBreakerPersistenceError(CircuitBreakerError):
    """A persistence store failed; the backend's own exception is the ``__cause__``.

    Breakers never let this reach a protected call: they fail open and log a warning.
    It reaches callers of explicit store operations such as ``CircuitBreaker.info()``.
    """


class CircuitBreakerUnsupportedBackendError(CircuitBreakerPersistenceError):
    """A store cannot run in this environment at all, e.g. ``DynamoDBPersistence``
    (aioboto3, asyncio only) under trio.

    The one store error a protected call raises instead of failing open: it is a
    configuration mistake that would otherwise leave the circuit unprotected forever,
    in silence.
    """
