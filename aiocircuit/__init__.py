"""aiocircuit: an async-native circuit breaker whose state a whole fleet shares.

A healthy circuit costs one clock read per call and no store traffic; a tripped one
protects every process sharing its store; on recovery exactly one caller in the fleet
probes the downstream; a failing store never fails a call.
"""

import logging

from ._breaker import CircuitBreaker, circuit_breaker
from ._circuit import CircuitInfo, CircuitState, CircuitTransition
from ._config import CircuitBreakerConfig
from ._errors import (
    CircuitBreakerConfigError,
    CircuitBreakerError,
    CircuitBreakerOpenError,
    CircuitBreakerPersistenceError,
    CircuitBreakerUnsupportedBackendError,
)

__all__ = [
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerConfigError",
    "CircuitBreakerError",
    "CircuitBreakerOpenError",
    "CircuitBreakerPersistenceError",
    "CircuitBreakerUnsupportedBackendError",
    "CircuitInfo",
    "CircuitState",
    "CircuitTransition",
    "circuit_breaker",
]

__version__ = "0.1.0"

# A library never configures logging; this only keeps "No handlers could be found"
# behaviour out of applications that do not either.
logging.getLogger("aiocircuit").addHandler(logging.NullHandler())

# Tracebacks and reprs show the public path (aiocircuit.CircuitBreakerOpenError), not
# the private module a name happens to live in.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
