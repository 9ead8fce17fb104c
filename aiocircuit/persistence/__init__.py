"""Persistence stores: where circuit state shared by a fleet lives.

``PersistenceStore`` is the async base class every backend implements;
``InMemoryPersistence`` is the embedded default.
"""

from ._base import CircuitRecord, PersistenceStore, WriteResult
from ._memory import InMemoryPersistence

__all__ = ["CircuitRecord", "InMemoryPersistence", "PersistenceStore", "WriteResult"]

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
