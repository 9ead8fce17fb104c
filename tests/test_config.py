"""Configuration is validated once, at construction, with errors that name the field."""

from __future__ import annotations

import math
from typing import Any

import pytest

from aiocircuit import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerConfigError,
    CircuitBreakerError,
)


def test_defaults_match_powertools() -> None:
    """The shared fields carry Powertools' defaults; ours add call and store timeouts."""
    config = CircuitBreakerConfig()
    assert (
        config.failure_threshold,
        config.success_threshold,
        config.recovery_timeout,
        config.handled_exceptions,
        config.ignored_exceptions,
        config.local_cache_max_age,
        config.call_timeout,
        config.store_timeout,
    ) == (5, 3, 30.0, None, None, 5.0, None, 1.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_threshold", 0),
        ("failure_threshold", -1),
        ("failure_threshold", 2.5),
        ("failure_threshold", True),
        ("failure_threshold", "5"),
        ("failure_threshold", 5.0),
        ("success_threshold", 0),
        ("success_threshold", None),
        ("recovery_timeout", 0),
        ("recovery_timeout", 0.005),
        ("failure_rate_threshold", 0),
        ("failure_rate_threshold", 1.5),
        ("failure_rate_threshold", True),
        ("sliding_window", 0),
        ("minimum_calls", 0),
        ("minimum_calls", 2.0),
        ("slow_call_duration", 0),
        ("slow_call_duration", math.inf),
        ("recovery_backoff", 0.9),
        ("max_recovery_timeout", 0),
        ("max_recovery_timeout", 10),
        ("recovery_jitter", 1.0),
        ("recovery_jitter", -0.1),
        ("enforce", "no"),
        ("enforce", 0),
        ("recovery_timeout", -1.0),
        ("recovery_timeout", math.inf),
        ("recovery_timeout", math.nan),
        ("recovery_timeout", "30"),
        ("recovery_timeout", True),
        ("local_cache_max_age", -0.5),
        ("local_cache_max_age", math.inf),
        ("call_timeout", 0),
        ("call_timeout", -1),
        ("call_timeout", math.inf),
        ("call_timeout", True),
        ("store_timeout", 0),
        ("store_timeout", None),
        ("store_timeout", math.nan),
        ("handled_exceptions", "ValueError"),
        ("handled_exceptions", []),
        ("handled_exceptions", [ValueError, 3]),
        ("handled_exceptions", int),
        ("handled_exceptions", KeyboardInterrupt),
        ("handled_exceptions", [ValueError, KeyboardInterrupt]),
        ("ignored_exceptions", 42),
        ("ignored_exceptions", ()),
        ("failure_predicate", "timeout"),
        ("result_predicate", 503),
    ],
)
def test_invalid_value_names_the_field(field: str, value: Any) -> None:
    """Every invalid value raises CircuitBreakerConfigError (a ValueError) naming the
    field and what is allowed."""
    with pytest.raises(CircuitBreakerConfigError) as caught:
        CircuitBreakerConfig(**{field: value})
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, CircuitBreakerError)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("failure_threshold", 0, "must be an integer >= 1 or None, got 0"),
        ("success_threshold", True, "must be an integer >= 1, got True"),
        ("recovery_timeout", 0.005, "must be a finite number of seconds >= 0.01, got 0.005"),
        ("recovery_timeout", math.nan, "must be a finite number of seconds >= 0.01, got nan"),
        (
            "failure_rate_threshold",
            1.5,
            "must be a finite number > 0 and <= 1 or None, got 1.5",
        ),
        ("recovery_jitter", 1, "must be a finite number >= 0 and < 1, got 1"),
        ("enforce", "no", "must be True or False, got 'no'"),
        (
            "max_recovery_timeout",
            10,
            "must be >= recovery_timeout (30) or None, got 10.0",
        ),
        ("local_cache_max_age", -1, "must be a finite number of seconds >= 0, got -1"),
        ("call_timeout", "2", "must be a finite number of seconds > 0 or None, got '2'"),
        ("store_timeout", -1, "must be a finite number of seconds > 0, got -1"),
        (
            "handled_exceptions",
            "ValueError",
            "must be an Exception subclass or an iterable of Exception subclasses, "
            "got 'ValueError'",
        ),
        ("handled_exceptions", [ValueError, 3], "must contain only Exception subclasses, got 3"),
        ("ignored_exceptions", [], "must contain at least one exception type"),
        ("failure_predicate", 503, "must be a callable returning bool, got 503"),
    ],
)
def test_error_says_what_is_allowed(field: str, value: Any, problem: str) -> None:
    """The message states the rule and the value given, not pydantic's wording."""
    with pytest.raises(CircuitBreakerConfigError) as caught:
        CircuitBreakerConfig(**{field: value})
    assert caught.value.problem == problem
    assert str(caught.value) == f"{field}: {problem}"


def test_exception_lists_are_mutually_exclusive() -> None:
    """handled_exceptions and ignored_exceptions cannot both be set."""
    with pytest.raises(CircuitBreakerConfigError, match="mutually exclusive"):
        CircuitBreakerConfig(handled_exceptions=KeyError, ignored_exceptions=ValueError)


def test_unknown_field_is_named() -> None:
    """A misspelt field is an error that names it and lists the real ones."""
    with pytest.raises(CircuitBreakerConfigError, match="failure_treshold") as caught:
        CircuitBreakerConfig(failure_treshold=3)
    assert "failure_threshold" in str(caught.value)


@pytest.mark.parametrize(
    "given",
    [ValueError, [ValueError, KeyError], (ValueError, KeyError), iter([ValueError, KeyError])],
)
def test_exception_lists_are_normalised(given: Any) -> None:
    """One class, a list, a tuple or an iterator: stored as a tuple."""
    config = CircuitBreakerConfig(handled_exceptions=given)
    assert isinstance(config.handled_exceptions, tuple)
    assert config.handled_exceptions[0] is ValueError


def test_config_is_frozen() -> None:
    """A config cannot be changed after construction."""
    config = CircuitBreakerConfig()
    with pytest.raises(ValueError, match="frozen"):
        config.failure_threshold = 1


def test_numbers_are_normalised() -> None:
    """Integer seconds are accepted and stored as floats."""
    config = CircuitBreakerConfig(recovery_timeout=10, local_cache_max_age=0, call_timeout=2)
    assert config.recovery_timeout == 10.0
    assert config.local_cache_max_age == 0.0
    assert config.call_timeout == 2.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": 3}, "name"),
        ({"config": {"failure_threshold": 2}}, "config"),
        ({"persistence_store": "dynamodb"}, "persistence_store"),
        ({"on_circuit_open": "fallback"}, "on_circuit_open"),
        ({"on_transition": 1}, "on_transition"),
    ],
)
def test_breaker_arguments_are_checked(kwargs: dict[str, Any], field: str) -> None:
    """Bad breaker arguments fail at construction, naming the argument."""
    arguments: dict[str, Any] = {"name": "c", **kwargs}
    with pytest.raises(CircuitBreakerConfigError) as caught:
        CircuitBreaker(**arguments)
    assert caught.value.field == field


async def _async_predicate(value: object) -> bool:
    return True


def test_predicates_must_be_plain_functions() -> None:
    """Predicates run on every outcome: an async one is refused at construction."""
    with pytest.raises(CircuitBreakerConfigError, match="not async") as caught:
        CircuitBreakerConfig(result_predicate=_async_predicate)
    assert caught.value.field == "result_predicate"


def test_failure_predicate_excludes_class_lists() -> None:
    """failure_predicate replaces the exception lists; giving both is an error."""
    with pytest.raises(CircuitBreakerConfigError) as caught:
        CircuitBreakerConfig(failure_predicate=bool, ignored_exceptions=KeyError)
    assert caught.value.field == "failure_predicate"


def test_copy_with_update_is_validated() -> None:
    """model_copy(update=...) validates like the constructor (pydantic's own does not)."""
    config = CircuitBreakerConfig(failure_threshold=2)
    with pytest.raises(CircuitBreakerConfigError) as caught:
        config.model_copy(update={"failure_threshold": 0})
    assert caught.value.field == "failure_threshold"
    with pytest.raises(CircuitBreakerConfigError) as caught:
        config.model_copy(update={"failure_treshold": 3})
    assert caught.value.field == "failure_treshold"
    with pytest.raises(CircuitBreakerConfigError, match="mutually exclusive"):
        config.model_copy(update={"handled_exceptions": KeyError, "ignored_exceptions": OSError})
    assert config.failure_threshold == 2


def test_copy_with_update_normalises_and_keeps_the_rest() -> None:
    """A valid update is normalised like a constructor argument; the other fields, and
    which fields were set, carry over."""
    config = CircuitBreakerConfig(failure_threshold=2, handled_exceptions=KeyError)
    copied = config.model_copy(update={"recovery_timeout": 10, "ignored_exceptions": None})
    assert copied.recovery_timeout == 10.0
    assert isinstance(copied.recovery_timeout, float)
    assert (copied.failure_threshold, copied.handled_exceptions) == (2, (KeyError,))
    assert copied.model_fields_set == {
        "failure_threshold",
        "handled_exceptions",
        "recovery_timeout",
        "ignored_exceptions",
    }
    assert config.model_copy() == config
    assert config.model_copy(update={}, deep=True) == config


def test_deep_copy_with_update() -> None:
    """deep=True copies the kept values; the updated ones are taken as given."""

    class Predicate:
        def __call__(self, value: object) -> bool:
            return False

    predicate, replacement = Predicate(), Predicate()
    config = CircuitBreakerConfig(result_predicate=predicate, failure_predicate=bool)
    copied = config.model_copy(update={"failure_predicate": replacement}, deep=True)
    assert copied.failure_predicate is replacement
    assert isinstance(copied.result_predicate, Predicate)
    assert copied.result_predicate is not predicate


def test_both_trip_rules_off_is_refused_naming_both() -> None:
    """A circuit that could never trip is a configuration error naming both rules."""
    with pytest.raises(CircuitBreakerConfigError) as caught:
        CircuitBreakerConfig(failure_threshold=None)
    assert "failure_threshold" in str(caught.value)
    assert "failure_rate_threshold" in str(caught.value)
    config = CircuitBreakerConfig(failure_threshold=None, failure_rate_threshold=0.5)
    assert (config.failure_threshold, config.failure_rate_threshold) == (None, 0.5)
    with pytest.raises(CircuitBreakerConfigError):
        config.model_copy(update={"failure_rate_threshold": None})


def test_new_fields_default_to_todays_behaviour() -> None:
    """Rate rule off, no slow calls, fixed open periods, enforcing."""
    config = CircuitBreakerConfig()
    assert (
        config.failure_rate_threshold,
        config.sliding_window,
        config.minimum_calls,
        config.slow_call_duration,
        config.recovery_backoff,
        config.max_recovery_timeout,
        config.recovery_jitter,
        config.enforce,
    ) == (None, 60.0, 20, None, 1.0, None, 0.0, True)
    assert CircuitBreakerConfig(recovery_timeout=0.01).recovery_timeout == 0.01
