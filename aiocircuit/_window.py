"""The failure-rate window: how many calls ended, and how many failed, lately.

A ring of buckets, each counting the calls and failures that ended during one slice of
the window, plus running totals over the ring. Counting a call is an index computation
and two or three integer increments: no allocation that grows with traffic, no lock
(callers hold the circuit's lock, or are the closed fast path, which has none: on one
event loop nothing interleaves with it; across threads an increment may be lost, as the
streak's reset may be).

A call counts in the bucket of the moment it ended, and drops out of the window when
its bucket leaves the ring: between ``seconds - seconds / BUCKETS`` and ``seconds``
after it ended.
"""

from __future__ import annotations

from fractions import Fraction

# Buckets per window: the window's edge is this fine. Rotating over a gap costs at most
# this many steps, once per bucket width.
BUCKETS = 20


class FailureWindow:
    """Counts over a sliding window of ``seconds``, tripping at ``rate`` once at least
    ``minimum`` calls are in it. Times are monotonic seconds."""

    __slots__ = (
        "minimum",
        "calls",
        "failures",
        "_per_second",
        "_numerator",
        "_denominator",
        "_bucket_calls",
        "_bucket_failures",
        "_head",
    )

    def __init__(self, seconds: float, rate: float, minimum: int) -> None:
        self.minimum = minimum
        self.calls = 0  # totals over the buckets in the ring
        self.failures = 0
        self._per_second = BUCKETS / seconds
        # The rate as the user wrote it (0.3 is 3/10, not the float just below it), so
        # that "30 % of 10 calls" is exactly 3 failures.
        exact = Fraction(repr(rate))
        self._numerator = exact.numerator
        self._denominator = exact.denominator
        self._bucket_calls = [0] * BUCKETS
        self._bucket_failures = [0] * BUCKETS
        self._head = 0  # the absolute index of the newest bucket

    def _advance(self, index: int) -> int:
        """Move the ring to the bucket of absolute ``index``, emptying the buckets that
        fall out of the window; return the slot to count in."""
        head = self._head
        if index <= head:
            return head % BUCKETS  # the same bucket (or a clock read out of order)
        calls, failures = self._bucket_calls, self._bucket_failures
        if index - head >= BUCKETS:
            for slot in range(BUCKETS):
                calls[slot] = failures[slot] = 0
            self.calls = self.failures = 0
        else:
            for absolute in range(head + 1, index + 1):
                slot = absolute % BUCKETS
                self.calls -= calls[slot]
                self.failures -= failures[slot]
                calls[slot] = failures[slot] = 0
        self._head = index
        return index % BUCKETS

    def _trips(self, calls: int, failures: int) -> bool:
        return (
            failures > 0
            and calls >= self.minimum
            and failures * self._denominator >= self._numerator * calls
        )

    def count_success(self, now: float) -> bool:
        """Count a success that ended at ``now``, unless counting it would trip the
        circuit (it completes the minimum with the rate already past the threshold):
        then count nothing and return False, for the caller's slow path to count it
        with :meth:`record`."""
        index = int(now * self._per_second)
        slot = self._advance(index) if index != self._head else index % BUCKETS
        calls = self.calls + 1
        if self.failures and self._trips(calls, self.failures):
            return False
        self.calls = calls
        self._bucket_calls[slot] += 1
        return True

    def record(self, now: float, *, failed: bool) -> bool:
        """Count a call that ended at ``now``; return whether the window now trips."""
        slot = self._advance(int(now * self._per_second))
        self.calls += 1
        self._bucket_calls[slot] += 1
        if failed:
            self.failures += 1
            self._bucket_failures[slot] += 1
        return self._trips(self.calls, self.failures)

    def clear(self) -> None:
        """Forget every call: the circuit tripped, or closed after a recovery."""
        for slot in range(BUCKETS):
            self._bucket_calls[slot] = self._bucket_failures[slot] = 0
        self.calls = self.failures = 0
