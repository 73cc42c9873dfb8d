"""The client's reconnect policy: exponential backoff under a cap, jitter only downwards."""

from __future__ import annotations

import random

import pytest

from sidecar.reconnect import ReconnectPolicy


def policy(**kw) -> ReconnectPolicy:
    return ReconnectPolicy(rng=random.Random(7), **kw)


def test_backoff_grows_exponentially_to_its_cap_and_jitter_only_shortens_it():
    p = policy(initial_s=0.1, max_s=1.0, multiplier=2.0, jitter=0.2)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (50, 1.0)]:
        delays = [p.delay_s(attempt) for _ in range(500)]
        assert 0.8 * ceiling <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > 0.15 * ceiling  # jitter spreads clients that lost the same server


def test_without_jitter_the_delays_are_exact():
    p = policy(initial_s=0.1, max_s=5.0, multiplier=2.0, jitter=0.0)
    assert [p.delay_s(n) for n in (1, 2, 3, 7)] == [0.1, 0.2, 0.4, 5.0]


def test_tries_forever_unless_attempts_are_capped():
    assert not policy().gives_up_after(10_000)
    capped = policy(max_attempts=3)
    assert not capped.gives_up_after(2) and capped.gives_up_after(3)


@pytest.mark.parametrize(
    "bad",
    [dict(initial_s=0), dict(initial_s=2, max_s=1), dict(multiplier=0.5), dict(jitter=1.0), dict(jitter=-0.1),
     dict(health_timeout_s=0), dict(max_attempts=0)],
)
def test_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        ReconnectPolicy(**bad)
