"""The public surface: complete, sorted, and reporting its public module."""

from __future__ import annotations

import importlib
import subprocess
import sys

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
        "CircuitBreakerUnsupportedBackendError",
    },
    "aiocircuit.persistence": {"PersistenceStore", "InMemoryPersistence", "DynamoDBPersistence"},
    "aiocircuit.persistence.dynamodb": {"DynamoDBPersistence"},
    "aiocircuit.testing": {"FakeClock"},
    "aiocircuit.contrib.httpx": {"CircuitBreakerTransport", "SyncCircuitBreakerTransport"},
    "aiocircuit.contrib.aiohttp": {"CircuitBreakerMiddleware"},
}

# Names a module exports lazily (so that importing it never imports an optional extra),
# with the module that defines them.
LAZY = {"aiocircuit.persistence": {"DynamoDBPersistence": "aiocircuit.persistence.dynamodb"}}

# The modules that cannot be imported without their extra (the others can, even
# aiocircuit.persistence.dynamodb: aioboto3 is needed only to make a store).
NEED_THEIR_EXTRA = {"aiocircuit.contrib.httpx", "aiocircuit.contrib.aiohttp"}
MODULES = [
    pytest.param(name, marks=[pytest.mark.extras] if name in NEED_THEIR_EXTRA else [])
    for name in sorted(CONTRACT)
]

# Every optional extra's packages: `import aiocircuit` loads none of them.
EXTRA_PACKAGES = ("aioboto3", "aiobotocore", "botocore", "httpx", "aiohttp")


@pytest.mark.parametrize("module_name", MODULES)
def test_all_is_sorted_and_complete(module_name: str) -> None:
    """__all__ is sorted, names only real public objects, and holds the contract."""
    module = importlib.import_module(module_name)
    exported = module.__all__
    assert exported == sorted(exported)
    assert CONTRACT[module_name] <= set(exported)
    defined_here = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", "") == module_name
    }
    assert defined_here | set(LAZY.get(module_name, {})) == set(exported)


@pytest.mark.parametrize("module_name", MODULES)
def test_exports_report_public_module(module_name: str) -> None:
    """Exported objects say they live where users import them from."""
    module = importlib.import_module(module_name)
    for name in module.__all__:
        expected = LAZY.get(module_name, {}).get(name, module_name)
        assert getattr(module, name).__module__ == expected, name


def test_import_never_loads_optional_extras() -> None:
    """`import aiocircuit` (with its persistence, testing and contrib packages) imports
    no optional extra's package where they are installed, and needs none where none is
    (`nox -s tests-core`)."""
    code = (
        "import sys, aiocircuit, aiocircuit.persistence, aiocircuit.testing, aiocircuit.contrib;"
        f"print(sorted(m for m in {EXTRA_PACKAGES!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_dynamodb_store_without_aioboto3_names_the_fix() -> None:
    """Without aioboto3, making a DynamoDB store says which pip install fixes it."""
    code = (
        "import sys; sys.modules['aioboto3'] = None\n"
        "from aiocircuit.persistence import DynamoDBPersistence\n"
        "try:\n    DynamoDBPersistence('circuits')\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'aiocircuit[dynamodb]'" in result.stdout, result.stderr


def test_version() -> None:
    """The package has a version string."""
    assert isinstance(aiocircuit.__version__, str)
