"""The one retry delay: doubling from ``base``, capped, monotone, and safe for any attempt."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from freshkeep.core.backoff import Backoff, backoff

bases = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False)
caps = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False)
attempts = st.integers(min_value=-5, max_value=10**12)


def test_it_doubles_from_base_up_to_the_cap() -> None:
    assert [backoff(n, 1.0, 10.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff(0, 1.0, 10.0) == backoff(1, 1.0, 10.0) == 1.0
    assert backoff(3, 0.0, 10.0) == 0.0


@given(bases, caps, attempts, st.integers(min_value=0, max_value=10**6))
def test_monotone_capped_and_finite(base: float, cap: float, attempt: int, more: int) -> None:
    delay = backoff(attempt, base, cap)
    later = backoff(attempt + more, base, cap)
    assert math.isfinite(delay) and 0.0 < delay <= cap
    assert delay <= later <= cap


@given(bases, caps)
def test_huge_attempts_neither_overflow_nor_exceed_the_cap(base: float, cap: float) -> None:
    for attempt in (1_024, 1_025, 10**9, 10**18, 2**80):
        assert backoff(attempt, base, cap) == cap or backoff(attempt, base, cap) <= cap


def test_the_stateful_backoff_counts_resets_and_jitters() -> None:
    delays = Backoff(0.5, 4.0)
    assert [delays.next() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert delays.attempt == 5
    delays.reset()
    assert delays.peek() == 0.5 and delays.next() == 0.5
    jittered = Backoff(1.0, 8.0, jitter=0.5, random=lambda: 1.0)
    assert [jittered.next() for _ in range(3)] == [0.5, 1.0, 2.0]
