"""Type-only exercise of the public API: checked by `mypy --strict`, never run.

If a public signature changes shape, this file stops type-checking.
"""

from __future__ import annotations

from aiocircuit import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerConfigError,
    CircuitBreakerError,
    CircuitBreakerOpenError,
    CircuitBreakerPersistenceError,
    CircuitInfo,
    CircuitState,
    CircuitTransition,
    circuit_breaker,
)
from aiocircuit.persistence import InMemoryPersistence, PersistenceStore
from aiocircuit.testing import FakeClock

store: PersistenceStore = InMemoryPersistence()
config = CircuitBreakerConfig(
    failure_threshold=5,
    success_threshold=3,
    recovery_timeout=30.0,
    handled_exceptions=(ConnectionError, TimeoutError),
    local_cache_max_age=5.0,
    call_timeout=2.0,
    store_timeout=1.0,
)


def fallback(order_id: str, *, circuit: CircuitInfo) -> str:
    return f"{order_id} buffered while {circuit.state}"


async def on_transition(transition: CircuitTransition) -> None:
    assert transition.to_state in (CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED)


breaker = CircuitBreaker(
    "payments",
    store,
    config=config,
    on_circuit_open=fallback,
    on_transition=on_transition,
    clock=FakeClock(),
)


@breaker
async def charge(order_id: str, amount: int) -> str:
    return order_id


@breaker
def charge_sync(order_id: str) -> int:
    return len(order_id)


@circuit_breaker("orders", store, on_circuit_open=fallback, config=config)
async def place(order_id: str) -> str:
    return order_id


async def usage() -> None:
    receipt: str = await charge("o-1", 100)
    size: int = charge_sync("o-1")
    placed: str = await place("o-2")
    result: str = await breaker.call(charge, "o-3", amount=5)
    async with breaker:
        pass
    with breaker:
        pass
    state: CircuitState = breaker.state
    info: CircuitInfo = await breaker.info()
    opened_at: float | None = info.opened_at
    probe_at: float | None = info.probe_at
    open_period: float | None = info.open_period
    async with InMemoryPersistence() as scoped:
        await scoped.aclose()
    await store.open()
    store.open_sync()
    if breaker.fast_admits():
        breaker.fast_succeeded()
        await breaker.fast_failed(None)
        await breaker.fast_failed(ConnectionError("down"))
        failed: bool = breaker.result_fails("a response")
        del failed
    FakeClock().step_wall(-3600.0)
    try:
        await charge("o-4", 1)
    except CircuitBreakerOpenError as exc:
        retry: float = exc.retry_after
        circuit: CircuitInfo = exc.circuit
    except (CircuitBreakerConfigError, CircuitBreakerPersistenceError, CircuitBreakerError):
        pass
    del receipt, size, placed, result, state, opened_at
