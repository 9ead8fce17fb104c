"""Persistence stores: where circuit state shared by a fleet lives.

``PersistenceStore`` is the async base class every backend implements;
``InMemoryPersistence`` is the embedded default. ``DynamoDBPersistence`` (the
``aiocircuit[dynamodb]`` extra) is imported only when first used, so importing
aiocircuit never imports aioboto3.
"""

from typing import TYPE_CHECKING, Any

from ._base import CircuitRecord, PersistenceStore, WriteResult
from ._memory import InMemoryPersistence

if TYPE_CHECKING:
    from .dynamodb import DynamoDBPersistence

__all__ = [
    "CircuitRecord",
    "DynamoDBPersistence",
    "InMemoryPersistence",
    "PersistenceStore",
    "WriteResult",
]

for _name in ("CircuitRecord", "InMemoryPersistence", "PersistenceStore", "WriteResult"):
    globals()[_name].__module__ = __name__
del _name


def __getattr__(name: str) -> Any:
    if name == "DynamoDBPersistence":
        from .dynamodb import DynamoDBPersistence

        return DynamoDBPersistence
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
