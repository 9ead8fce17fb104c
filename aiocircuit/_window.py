"""The failure-rate window: how many calls ended, and how many failed, lately.

A ring of buckets, each counting the calls and failures that ended during one slice of
the window, plus running totals over the ring. Counting a call is an index computation
and two or three integer increments: no allocation that grows with traffic, no lock
(callers hold the circuit's lock, or are the closed fast path, which has none: on one
event loop nothing interleaves with it; across threads an increment may be lost, as the
streak's reset may be).

A call counts in the bucket of the moment it ended (a success on the closed fast path:
of the moment it started, which saves a clock read), and drops out of the window when
its bucket leaves the ring: between ``seconds - seconds / BUCKETS`` and ``seconds``
after that.
"""

from __future__ import annotations

import math
from fractions import Fraction

# Buckets per window: the window's edge is this fine. Rotating over a gap costs at most
# this many steps, once per bucket width.
BUCKETS = 20


class FailureWindow:
    """Counts over a sliding window of ``seconds``, tripping at ``rate`` once at least
    ``minimum`` calls are in it. Times are monotonic seconds.

    The newest bucket's counts are plain attributes and the ring holds the older ones,
    so that counting a call in the current bucket is a comparison and two increments.
    """

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
        "_head_calls",
        "_head_failures",
        "_head_ends",
    )

    def __init__(self, seconds: float, rate: float, minimum: int) -> None:
        self.minimum = minimum
        self.calls = 0  # totals over the window, the newest bucket included
        self.failures = 0
        self._per_second = BUCKETS / seconds
        # The rate as the user wrote it (0.3 is 3/10, not the float just below it), so
        # that "30 % of 10 calls" is exactly 3 failures.
        exact = Fraction(repr(rate))
        self._numerator = exact.numerator
        self._denominator = exact.denominator
        self._bucket_calls = [0] * BUCKETS  # the older buckets, by absolute index % BUCKETS
        self._bucket_failures = [0] * BUCKETS
        self._head = 0  # the absolute index of the newest bucket ...
        self._head_calls = 0  # ... its counts ...
        self._head_failures = 0
        self._head_ends = -math.inf  # ... and when it ends (monotonic)

    def _advance(self, now: float) -> None:
        """Make the bucket of ``now`` the newest, emptying the buckets that fall out of
        the window."""
        index = int(now * self._per_second)
        head = self._head
        if index <= head:
            return  # the same bucket after all (rounding at its edge)
        calls, failures = self._bucket_calls, self._bucket_failures
        calls[head % BUCKETS] = self._head_calls
        failures[head % BUCKETS] = self._head_failures
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
        self._head_calls = self._head_failures = 0
        self._head_ends = (index + 1) / self._per_second

    def _trips(self, calls: int, failures: int) -> bool:
        return (
            failures > 0
            and calls >= self.minimum
            and failures * self._denominator >= self._numerator * calls
        )

    def count_success(self, now: float) -> bool:
        """Count a success at ``now``, unless counting it would trip the circuit (it
        completes the minimum with the rate already past the threshold): then count
        nothing and return False, for the caller's slow path to count it with
        :meth:`record`."""
        if now >= self._head_ends:
            self._advance(now)
        if self.failures and self._trips(self.calls + 1, self.failures):
            return False
        self.calls += 1
        self._head_calls += 1
        return True

    def record(self, now: float, *, failed: bool) -> bool:
        """Count a call that ended at ``now``; return whether the window now trips."""
        if now >= self._head_ends:
            self._advance(now)
        self.calls += 1
        self._head_calls += 1
        if failed:
            self.failures += 1
            self._head_failures += 1
        return self._trips(self.calls, self.failures)

    def clear(self) -> None:
        """Forget every call: the circuit tripped, or closed after a recovery."""
        for slot in range(BUCKETS):
            self._bucket_calls[slot] = self._bucket_failures[slot] = 0
        self.calls = self.failures = self._head_calls = self._head_failures = 0
