"""The public surface: complete, sorted, and reporting its public module."""

from __future__ import annotations

import importlib

import pytest

import aiocircuit

CONTRACT = {
    "aiocircuit": {
        "CircuitBreaker",
        "circuit_breaker",
        "CircuitBreakerConfig",
        "CircuitState",
        "CircuitInfo",
        "CircuitTransition",
        "CircuitBreakerError",
        "CircuitBreakerOpenError",
        "CircuitBreakerConfigError",
        "CircuitBreakerPersistenceError",
    },
    "aiocircuit.persistence": {"PersistenceStore", "InMemoryPersistence"},
    "aiocircuit.testing": {"FakeClock"},
}


@pytest.mark.parametrize("module_name", sorted(CONTRACT))
def test_all_is_sorted_and_complete(module_name: str) -> None:
    """__all__ is sorted, names only real public objects, and holds the contract."""
    module = importlib.import_module(module_name)
    exported = module.__all__
    assert exported == sorted(exported)
    assert CONTRACT[module_name] <= set(exported)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("aiocircuit")
    }
    assert public == set(exported)


@pytest.mark.parametrize("module_name", sorted(CONTRACT))
def test_exports_report_public_module(module_name: str) -> None:
    """Exported objects say they live where users import them from."""
    module = importlib.import_module(module_name)
    for name in module.__all__:
        assert getattr(module, name).__module__ == module_name, name


def test_version() -> None:
    """The package has a version string."""
    assert isinstance(aiocircuit.__version__, str)
