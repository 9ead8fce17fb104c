"""Breaker configuration: validated and normalised once, at construction.

Pydantic is used here and only here; breakers copy the values they need into plain
attributes so that nothing on the per-call path touches a model.

The rules live on the fields, as pydantic constraints: strict numbers (``True`` is not
a threshold of 1, ``"30"`` is not 30 seconds), finite seconds, bounds. Validators remain
only for what constraints cannot say: a lone exception class stands for a one-element
tuple, a predicate must not be async, and some fields exclude others. Pydantic's
``ValidationError`` becomes one :class:`CircuitBreakerConfigError` naming the field and
what it allows, and copies made with ``model_copy(update=...)`` are validated too (by
default pydantic trusts the update).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from ._errors import CircuitBreakerConfigError
from ._hooks import is_async_callable

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails
    from typing_extensions import Self

ExceptionTypes = tuple[type[Exception], ...]


def _one_or_many(value: object) -> object:
    # A lone class stands for a one-element tuple; pydantic checks the rest.
    return (value,) if isinstance(value, type) else value


def _synchronous(predicate: Callable[[Any], bool]) -> Callable[[Any], bool]:
    if is_async_callable(predicate):
        raise ValueError("must be a plain function (it runs on every call's outcome), not async")
    return predicate


# Any non-string iterable of Exception subclasses (or one subclass), at least one.
_Exceptions = Annotated[ExceptionTypes, BeforeValidator(_one_or_many), Field(min_length=1)]
# Predicates run inline on every outcome, so they cannot be awaited.
_FailurePredicate = Annotated[Callable[[Exception], bool], AfterValidator(_synchronous)]
_ResultPredicate = Annotated[Callable[[Any], bool], AfterValidator(_synchronous)]

# The float fields that are ratios or factors, not seconds (for error messages).
_FRACTIONS = frozenset({"failure_rate_threshold", "recovery_backoff", "recovery_jitter"})

# What a field allows, by pydantic error type, for the fields that are not numbers.
_PROBLEMS = {
    "tuple_type": "must be an Exception subclass or an iterable of Exception subclasses",
    "is_subclass_of": "must contain only Exception subclasses",
    "too_short": "must contain at least one exception type",
    "callable_type": "must be a callable returning bool",
    "bool_type": "must be True or False",
}


class CircuitBreakerConfig(BaseModel):
    """How a circuit trips and recovers. Frozen; invalid values raise
    :class:`CircuitBreakerConfigError` naming the field, also from
    ``model_copy(update=...)``.

    The first six fields carry the names and defaults of Powertools' circuit breaker.

    Every number of seconds is finite and may be given as an ``int``; it is stored as a
    ``float``. ``bool`` is refused wherever a number is expected.

    A circuit trips on whichever of its two rules fires first: the streak
    (``failure_threshold``) and the failure rate (``failure_rate_threshold``), at least
    one of which must be set. Slow calls (``slow_call_duration``) count as failures for
    both.

    Attributes:
        failure_threshold: consecutive counted failures in one process that open the
            circuit. An integer, at least 1; ``None`` turns the streak rule off.
        success_threshold: consecutive successful probes that close it again. An
            integer, at least 1.
        failure_rate_threshold: when set (``0 < x <= 1``), the circuit also opens once,
            over the last ``sliding_window`` seconds, at least ``minimum_calls`` calls
            have ended in this process and the share of them that failed is ``>= x``.
        sliding_window: seconds the failure rate is counted over (more than 0). Counted
            in 20 buckets: a call drops out of the window between ``sliding_window``
            minus one bucket and ``sliding_window`` after it was counted.
        minimum_calls: calls that must have ended within the window before the rate
            can trip the circuit. An integer, at least 1.
        slow_call_duration: seconds (more than 0) beyond which a call that succeeded
            counts as a failure. It is not cancelled: ``call_timeout`` cancels.
        recovery_timeout: seconds a circuit stays open, after a trip, before one probe
            may run (at least 0.01). A probe lease lasts at least this long too (and at
            least a second, and at least ``call_timeout``).
        recovery_backoff: each failed probe multiplies the next open period by this
            (at least 1), up to ``max_recovery_timeout``; a close starts again from
            ``recovery_timeout``. The fleet shares the current period through the store.
        max_recovery_timeout: the longest an open period may grow to (at least
            ``recovery_timeout``); ``None``: no cap.
        recovery_jitter: each open period is drawn once, at the trip or reopen,
            uniformly from ``[1 - x, 1 + x]`` times its nominal length (``0 <= x < 1``),
            and the whole fleet waits that drawn period; never longer than
            ``max_recovery_timeout``.
        enforce: ``False`` is shadow mode, for rolling out or tuning a rule: the circuit
            trips, elects probes and closes in the store as usual, but this breaker
            never rejects. A call it would have rejected runs, its outcome does not
            count, and it is logged at debug level as ``would_reject``.
        handled_exceptions: only these exception types count as failures (one type or
            an iterable of types, at least one).
        ignored_exceptions: every ``Exception`` except these counts as a failure.
            Mutually exclusive with ``handled_exceptions``.
        local_cache_max_age: seconds a process may act on its cached copy of the stored
            state before reading the store again (0 reads on every call).
        call_timeout: seconds (more than 0) a call may run before it is cancelled,
            raises ``TimeoutError`` and counts as a failure; ``None`` for no limit.
        store_timeout: seconds (more than 0) a store operation may take before it is
            abandoned and the call fails open.
        failure_predicate: ``failure_predicate(exc) -> bool`` decides whether an
            ``Exception`` counts as a failure, instead of the exception lists (which
            must then be unset). A plain function, not async.
        result_predicate: ``result_predicate(value) -> bool`` makes a returned value
            count as a failure when it returns true (an HTTP 503 response, say); the
            value is still returned to the caller. Applies to the decorator and
            ``call()`` forms, which see the value. A plain function, not async.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_threshold: int | None = Field(5, strict=True, ge=1)
    success_threshold: int = Field(3, strict=True, ge=1)
    # Stores keep sub-second times; below 10 ms a probe would start before most stores
    # could even answer the trip.
    recovery_timeout: float = Field(30.0, strict=True, allow_inf_nan=False, ge=0.01)
    handled_exceptions: _Exceptions | None = None
    ignored_exceptions: _Exceptions | None = None
    local_cache_max_age: float = Field(5.0, strict=True, allow_inf_nan=False, ge=0)
    call_timeout: float | None = Field(None, strict=True, allow_inf_nan=False, gt=0)
    store_timeout: float = Field(1.0, strict=True, allow_inf_nan=False, gt=0)
    failure_predicate: _FailurePredicate | None = None
    result_predicate: _ResultPredicate | None = None
    failure_rate_threshold: float | None = Field(None, strict=True, allow_inf_nan=False, gt=0, le=1)
    sliding_window: float = Field(60.0, strict=True, allow_inf_nan=False, gt=0)
    minimum_calls: int = Field(20, strict=True, ge=1)
    slow_call_duration: float | None = Field(None, strict=True, allow_inf_nan=False, gt=0)
    recovery_backoff: float = Field(1.0, strict=True, allow_inf_nan=False, ge=1)
    max_recovery_timeout: float | None = Field(None, strict=True, allow_inf_nan=False, gt=0)
    recovery_jitter: float = Field(0.0, strict=True, allow_inf_nan=False, ge=0, lt=1)
    enforce: bool = Field(True, strict=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise self._config_error(exc.errors()[0]) from None

    @classmethod
    def _config_error(cls, error: ErrorDetails) -> CircuitBreakerConfigError:
        """Pydantic's first error as one error naming the field and what it allows."""
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, CircuitBreakerConfigError):
            return cause  # from the model validator, which names the field itself
        loc = error["loc"]
        field = str(loc[0]) if loc else "config"
        got = f", got {error['input']!r}"
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(cls.model_fields)
            return CircuitBreakerConfigError(
                field, f"is not a configuration field; allowed: {allowed}"
            )
        if error["type"] == "value_error" and cause is not None:
            return CircuitBreakerConfigError(field, str(cause))  # from a field validator
        if error["type"] == "too_short":
            return CircuitBreakerConfigError(field, _PROBLEMS["too_short"])
        if field in cls.model_fields and (number := cls._allowed_number(field)) is not None:
            return CircuitBreakerConfigError(field, f"must be {number}{got}")
        if error["type"] in _PROBLEMS:
            return CircuitBreakerConfigError(field, _PROBLEMS[error["type"]] + got)
        return CircuitBreakerConfigError(field, f"{error['msg']}{got}")

    @classmethod
    def _allowed_number(cls, field: str) -> str | None:
        """``"an integer >= 1"``, ``"a finite number of seconds > 0 or None"``, ...: read
        off the field's declaration, so that the message cannot drift from the rule."""
        info = cls.model_fields[field]
        types = get_args(info.annotation) or (info.annotation,)
        if int in types:
            kind = "an integer"
        elif float in types and field in _FRACTIONS:
            kind = "a finite number"
        elif float in types:
            kind = "a finite number of seconds"
        else:
            return None
        bounds = []
        for constraint in info.metadata:
            for attribute, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                bound = getattr(constraint, attribute, None)
                if isinstance(bound, (int, float)):
                    bounds.append(f"{symbol} {bound:g}")
        words = " ".join([kind, " and ".join(bounds)]) if bounds else kind
        return f"{words} or None" if type(None) in types else words

    @model_validator(mode="after")
    def _check_exclusive(self) -> CircuitBreakerConfig:
        if self.failure_threshold is None and self.failure_rate_threshold is None:
            raise CircuitBreakerConfigError(
                "failure_threshold",
                "failure_threshold and failure_rate_threshold are both None: the circuit "
                "could never trip; set at least one",
            )
        if self.max_recovery_timeout is not None and (
            self.max_recovery_timeout < self.recovery_timeout
        ):
            raise CircuitBreakerConfigError(
                "max_recovery_timeout",
                f"must be >= recovery_timeout ({self.recovery_timeout:g}) or None, "
                f"got {self.max_recovery_timeout!r}",
            )
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

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy of this config; with ``update``, a new config built from this one's
        fields and ``update`` and validated like any other (pydantic's own
        ``model_copy`` stores updated values unchecked), so an invalid update raises
        :class:`CircuitBreakerConfigError`. ``deep`` deep-copies the values kept."""
        if not update:
            return super().model_copy(deep=deep)
        kept = {name: getattr(self, name) for name in self.model_fields_set - update.keys()}
        if deep:
            kept = copy.deepcopy(kept)
        return type(self)(**kept, **update)
