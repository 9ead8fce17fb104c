"""Breaker configuration: validated and normalised once, at construction.

Pydantic is used here and only here; breakers copy the values they need into plain
attributes so that nothing on the per-call path touches a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from ._errors import CircuitBreakerConfigError
from ._hooks import is_async_callable

ExceptionTypes = tuple[type[Exception], ...]


def _positive_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CircuitBreakerConfigError(field, f"must be an integer >= 1, got {value!r}")
    return value


def _seconds(field: str, value: object, *, minimum: float, inclusive: bool) -> float:
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
    problem = f"must be a finite number of seconds {bound}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CircuitBreakerConfigError(field, problem)
    seconds = float(value)
    too_small = seconds < minimum if inclusive else seconds <= minimum
    if not math.isfinite(seconds) or too_small:
        raise CircuitBreakerConfigError(field, problem)
    return seconds


def _exception_types(field: str, value: object) -> ExceptionTypes | None:
    if value is None:
        return None
    if isinstance(value, type):
        items: list[object] = [value]
    elif isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise CircuitBreakerConfigError(
            field,
            f"must be an Exception subclass or an iterable of Exception subclasses, got {value!r}",
        )
    else:
        items = list(value)
    if not items:
        raise CircuitBreakerConfigError(field, "must contain at least one exception type")
    for item in items:
        if not (isinstance(item, type) and issubclass(item, Exception)):
            raise CircuitBreakerConfigError(
                field, f"must contain only Exception subclasses, got {item!r}"
            )
    return tuple(items)  # type: ignore[arg-type]  # every item checked above


def _predicate(field: str, value: object) -> Callable[[Any], bool] | None:
    if value is None:
        return None
    if not callable(value):
        raise CircuitBreakerConfigError(field, f"must be a callable returning bool, got {value!r}")
    if is_async_callable(value):
        raise CircuitBreakerConfigError(
            field, "must be a plain function (it runs on every call's outcome), not async"
        )
    return value


class CircuitBreakerConfig(BaseModel):
    """How a circuit trips and recovers. Frozen; invalid values raise
    :class:`CircuitBreakerConfigError` naming the field.

    The first six fields carry the names and defaults of Powertools' circuit breaker.

    Attributes:
        failure_threshold: consecutive counted failures in one process that open the
            circuit.
        success_threshold: consecutive successful probes that close it again.
        recovery_timeout: seconds a circuit stays open before one probe may run; also
            the length of a probe lease. At least 1: stores keep whole Unix seconds, so
            a probe may start up to one second before the full timeout has passed.
        handled_exceptions: only these exception types count as failures (one type or
            an iterable of types).
        ignored_exceptions: every ``Exception`` except these counts as a failure.
            Mutually exclusive with ``handled_exceptions``.
        local_cache_max_age: seconds a process may act on its cached copy of the stored
            state before reading the store again (0 reads on every call).
        call_timeout: seconds a call may run before it is cancelled, raises
            ``TimeoutError`` and counts as a failure; ``None`` for no limit.
        store_timeout: seconds a store operation may take before it is abandoned and
            the call fails open.
        failure_predicate: ``failure_predicate(exc) -> bool`` decides whether an
            ``Exception`` counts as a failure, instead of the exception lists (which
            must then be unset).
        result_predicate: ``result_predicate(value) -> bool`` makes a returned value
            count as a failure when it returns true (an HTTP 503 response, say); the
            value is still returned to the caller. Applies to the decorator and
            ``call()`` forms, which see the value.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    failure_threshold: int = 5
    success_threshold: int = 3
    recovery_timeout: float = 30.0
    handled_exceptions: ExceptionTypes | None = None
    ignored_exceptions: ExceptionTypes | None = None
    local_cache_max_age: float = 5.0
    call_timeout: float | None = None
    store_timeout: float = 1.0
    failure_predicate: Callable[[Exception], bool] | None = None
    result_predicate: Callable[[Any], bool] | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            # Our validators raise CircuitBreakerConfigError; pydantic wraps it. Unwrap so
            # users see one clear error naming the field, with pydantic's detail chained.
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"]) or "config"
            cause = error.get("ctx", {}).get("error")
            if isinstance(cause, CircuitBreakerConfigError):
                raise cause from None
            if error["type"] == "extra_forbidden":
                allowed = ", ".join(type(self).model_fields)
                raise CircuitBreakerConfigError(
                    field, f"is not a configuration field; allowed: {allowed}"
                ) from None
            raise CircuitBreakerConfigError(field, error["msg"]) from exc

    @field_validator("failure_threshold", "success_threshold", mode="before")
    @classmethod
    def _check_thresholds(cls, value: object, info: Any) -> int:
        return _positive_int(info.field_name, value)

    @field_validator("recovery_timeout", mode="before")
    @classmethod
    def _check_recovery_timeout(cls, value: object, info: Any) -> float:
        # Stores keep whole seconds (Powertools' item layout): a shorter recovery
        # timeout could not be told apart from none at all.
        return _seconds(info.field_name, value, minimum=1, inclusive=True)

    @field_validator("store_timeout", mode="before")
    @classmethod
    def _check_store_timeout(cls, value: object, info: Any) -> float:
        return _seconds(info.field_name, value, minimum=0, inclusive=False)

    @field_validator("local_cache_max_age", mode="before")
    @classmethod
    def _check_cache_age(cls, value: object, info: Any) -> float:
        return _seconds(info.field_name, value, minimum=0, inclusive=True)

    @field_validator("call_timeout", mode="before")
    @classmethod
    def _check_call_timeout(cls, value: object, info: Any) -> float | None:
        if value is None:
            return None
        return _seconds(info.field_name, value, minimum=0, inclusive=False)

    @field_validator("handled_exceptions", "ignored_exceptions", mode="before")
    @classmethod
    def _check_exceptions(cls, value: object, info: Any) -> ExceptionTypes | None:
        return _exception_types(info.field_name, value)

    @field_validator("failure_predicate", "result_predicate", mode="before")
    @classmethod
    def _check_predicates(cls, value: object, info: Any) -> Callable[[Any], bool] | None:
        return _predicate(info.field_name, value)

    @model_validator(mode="after")
    def _check_exclusive(self) -> CircuitBreakerConfig:
        if self.handled_exceptions is not None and self.ignored_exceptions is not None:
            raise CircuitBreakerConfigError(
                "handled_exceptions",
                "handled_exceptions and ignored_exceptions are mutually exclusive; pass only one",
            )
        if self.failure_predicate is not None and (
            self.handled_exceptions is not None or self.ignored_exceptions is not None
        ):
            raise CircuitBreakerConfigError(
                "failure_predicate",
                "replaces handled_exceptions and ignored_exceptions; pass one or the other",
            )
        return self

    def counts_as_failure(self, exc: BaseException) -> bool:
        """Whether ``exc`` counts as a failure under this configuration."""
        if not isinstance(exc, Exception):
            return False
        if self.failure_predicate is not None:
            return bool(self.failure_predicate(exc))
        if self.handled_exceptions is not None:
            return isinstance(exc, self.handled_exceptions)
        if self.ignored_exceptions is not None:
            return not isinstance(exc, self.ignored_exceptions)
        return True
