"""The client's retry policy: backoff, jitter, the server's hint, the deadline."""

from __future__ import annotations

import random

import pytest

from sidecar.retry import RetryPolicy


def policy(**kw) -> RetryPolicy:
    return RetryPolicy(rng=random.Random(7), **kw)


def test_backoff_grows_exponentially_under_its_cap_with_full_jitter():
    p = policy(initial_backoff_s=0.01, multiplier=2.0, max_backoff_s=0.05, max_attempts=100)
    for attempt, ceiling in [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.05), (10, 0.05)]:
        delays = [p.delay_s(attempt, None) for _ in range(500)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > 0.8 * ceiling  # jitter spreads over the whole range


def test_never_retries_sooner_than_the_servers_hint():
    p = policy(initial_backoff_s=0.001)
    assert all(p.delay_s(1, 0.25) == 0.25 for _ in range(100))


def test_gives_up_when_attempts_are_used_or_the_deadline_would_pass():
    p = policy(max_attempts=3)
    assert p.next_delay_s(1, None, time_left_s=10) is not None
    assert p.next_delay_s(3, None, time_left_s=10) is None  # three attempts made
    assert p.next_delay_s(1, 0.5, time_left_s=0.4) is None  # the hint alone overshoots


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(multiplier=0.5)
