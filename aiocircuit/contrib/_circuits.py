"""What the HTTP integrations share: one lazily created circuit per key, the default key
(the request's origin), and the configuration that makes 5xx responses and transport
errors count as failures unless the user says otherwise.

This module imports no HTTP client; each integration hands it its own exception types
and its own "is this response a failure" test.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from .._breaker import CircuitBreaker
from .._circuit import CircuitTransition
from .._clock import Clock
from .._config import CircuitBreakerConfig
from .._errors import CircuitBreakerConfigError, CircuitBreakerOpenError
from .._hooks import Hook
from ..persistence._base import PersistenceStore

E = TypeVar("E")
R = TypeVar("R")

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


# Cached: this runs on every request with the default key, and a service talks to a
# few origins. Bounded all the same, since the cache is shared by every client.
@functools.lru_cache(maxsize=1024)
def origin_key(scheme: str, host: str, port: int | None) -> str:
    """``scheme://host:port`` with the scheme's default port filled in and an IPv6 host
    bracketed, so that httpx and aiohttp name the same origin the same way (and share
    its circuit when they share a store)."""
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"


class CountedExceptions:
    """The default ``failure_predicate`` of the HTTP integrations: the client's transport
    errors count, widened by the user's ``handled_exceptions`` and narrowed by their
    ``ignored_exceptions``. Anything else (a bug in a wrapped transport, say) does not
    count: it says nothing about the downstream's health."""

    __slots__ = ("counted", "ignored")

    def __init__(
        self, counted: tuple[type[Exception], ...], ignored: tuple[type[Exception], ...]
    ) -> None:
        self.counted = counted
        self.ignored = ignored

    def __call__(self, exc: Exception) -> bool:
        if self.ignored and isinstance(exc, self.ignored):
            return False
        return isinstance(exc, self.counted)

    def __repr__(self) -> str:
        counted = ", ".join(t.__qualname__ for t in self.counted)
        ignored = ", ".join(t.__qualname__ for t in self.ignored)
        return f"<counted: {counted}; ignored: {ignored or '-'}>"


def http_config(
    config: CircuitBreakerConfig | None,
    *,
    transport_errors: tuple[type[Exception], ...],
    is_failure_response: Callable[[Any], bool],
) -> CircuitBreakerConfig:
    """``config`` with the HTTP defaults filled in; the user's own predicates win.

    ``failure_predicate`` unset: :class:`CountedExceptions` built from
    ``transport_errors`` and the config's exception lists (which the predicate then
    replaces, as the config requires). ``result_predicate`` unset:
    ``is_failure_response``.
    """
    if config is None:
        config = CircuitBreakerConfig()
    elif not isinstance(config, CircuitBreakerConfig):
        raise CircuitBreakerConfigError(
            "config", f"must be a CircuitBreakerConfig, got {type(config).__name__}"
        )
    update: dict[str, Any] = {}
    if config.failure_predicate is None:
        update["failure_predicate"] = CountedExceptions(
            transport_errors + (config.handled_exceptions or ()),
            config.ignored_exceptions or (),
        )
        update["handled_exceptions"] = None
        update["ignored_exceptions"] = None
    if config.result_predicate is None:
        update["result_predicate"] = is_failure_response
    return config.model_copy(update=update)  # validated, like any config


def fast_path_failed(
    breaker: CircuitBreaker, response: object, status: int, judge_by_status: bool
) -> bool:
    """Whether a response the closed fast path let through counts as a failure (which
    the caller records with ``await breaker.fast_failed(None)``; a success it records
    with ``breaker.fast_succeeded(started)``).

    ``judge_by_status``: the config's result rule is the built-in ``status >= 500``,
    tested inline; a user's ``result_predicate`` goes through the breaker, which
    survives one that raises.
    """
    return status >= 500 if judge_by_status else breaker.result_fails(response)


def check_options(
    *,
    persistence_store: object,
    key: object,
    on_circuit_open: Callable[..., Any] | None,
    on_transition: object,
) -> Hook | None:
    """Fail at construction, naming the field, rather than at the first request; return
    ``on_circuit_open`` as a :class:`Hook` (plain or async, decided once)."""
    if persistence_store is not None and not isinstance(persistence_store, PersistenceStore):
        raise CircuitBreakerConfigError(
            "persistence_store",
            f"must be a PersistenceStore, got {type(persistence_store).__name__}",
        )
    for field, value in (
        ("key", key),
        ("on_circuit_open", on_circuit_open),
        ("on_transition", on_transition),
    ):
        if value is not None and not callable(value):
            raise CircuitBreakerConfigError(field, f"must be callable, got {value!r}")
    return None if on_circuit_open is None else Hook(on_circuit_open)


def fallback_or_raise(
    result: object, error: CircuitBreakerOpenError, response_type: type[R], hook: Hook
) -> R:
    """What ``on_circuit_open`` returned: a response to hand to the caller, or ``None``
    to raise the open error after all (a hook that only logs or counts)."""
    if result is None:
        raise error
    if not isinstance(result, response_type):
        raise TypeError(
            f"on_circuit_open {hook.fn!r} must return a {response_type.__module__}."
            f"{response_type.__qualname__} or None, got {type(result).__name__}"
        )
    return result


class CircuitRegistry(Generic[E]):
    """One entry (a :class:`CircuitBreaker`, perhaps with what it protects) per key,
    created on first use and kept for the registry's life: unbounded, because a
    circuit's state is what a caller relies on, and evicting one would forget an open
    circuit's failures. Keys are meant to be few (origins, service names); a key per
    URL would grow without bound.

    Lookup of an existing key takes no lock; creation does, so that two threads (the
    sync transport) never make two breakers for one key.
    """

    __slots__ = ("_entries", "_breakers", "_lock", "_make", "_new_breaker")

    def __init__(
        self,
        make: Callable[[CircuitBreaker], E],
        *,
        persistence_store: PersistenceStore | None,
        config: CircuitBreakerConfig,
        on_transition: Callable[[CircuitTransition], Any] | None,
        clock: Clock | None,
    ) -> None:
        self._entries: dict[str, E] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()
        self._make = make

        def new_breaker(name: str) -> CircuitBreaker:
            return CircuitBreaker(
                name, persistence_store, config=config, on_transition=on_transition, clock=clock
            )

        self._new_breaker = new_breaker

    def get(self, key: str) -> E:
        """The entry for ``key``, created on first use."""
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                breaker = self._new_breaker(key)
                entry = self._make(breaker)
                self._breakers[key] = breaker
                self._entries[key] = entry
        return entry

    @property
    def breakers(self) -> Mapping[str, CircuitBreaker]:
        """The circuits made so far, by key (a read-only live view)."""
        return MappingProxyType(self._breakers)
