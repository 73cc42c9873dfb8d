"""capped_exponential: the naive formula wherever that does not overflow, the cap beyond."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from sidecar.backoff import capped_exponential
from sidecar.reconnect import ReconnectPolicy
from sidecar.retry import RetryPolicy

initials = st.floats(min_value=1e-6, max_value=1e3)
multipliers = st.floats(min_value=1.0, max_value=10.0)
attempts = st.integers(min_value=0, max_value=100_000)


@given(initials, multipliers, attempts, st.floats(min_value=1e-6, max_value=1e6))
def test_equals_the_naive_formula_and_never_overflows(initial, multiplier, n, cap):
    got = capped_exponential(initial, multiplier, n, cap)
    try:
        naive = min(cap, initial * multiplier**n)
    except OverflowError:
        naive = cap
    assert math.isclose(got, naive, rel_tol=1e-9)
    assert got <= max(cap, initial) and got > 0


@given(initials, multipliers, attempts)
def test_never_shrinks_as_attempts_grow(initial, multiplier, n):
    cap = initial * 100
    assert capped_exponential(initial, multiplier, n, cap) <= capped_exponential(initial, multiplier, n + 1, cap)


def test_policies_that_never_give_up_still_answer_late_attempts():
    # 2 ** 1100 overflows a float: the policies once raised OverflowError here.
    assert ReconnectPolicy(initial_s=0.1, max_s=2.0, jitter=0).delay_s(1100) == 2.0
    assert RetryPolicy(max_attempts=5000, initial_backoff_s=0.005, max_backoff_s=1.0).delay_s(1100, None) <= 1.0
