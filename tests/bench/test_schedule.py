"""The open loop's Poisson arrivals, from a seeded generator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sidecar.bench.schedule import CHUNK, poisson_arrivals


def times(rate: float, n: int, seed: int = 0, start: float = 0.0) -> np.ndarray:
    return np.array(list(itertools.islice(poisson_arrivals(rate, np.random.default_rng(seed), start), n)))


def test_the_mean_gap_is_one_over_the_rate_and_gaps_are_exponential():
    t = times(2000.0, 3 * CHUNK + 17)  # across chunk boundaries
    gaps = np.diff(np.concatenate([[0.0], t]))
    assert (gaps > 0).all()
    assert gaps.mean() == pytest.approx(1 / 2000.0, rel=0.03)
    # An exponential's standard deviation equals its mean (a fixed-interval schedule's is 0).
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)


def test_arrivals_start_after_start_and_the_same_seed_gives_the_same_schedule():
    t = times(100.0, 50, seed=7, start=1000.0)
    assert (t > 1000.0).all() and (np.diff(t) > 0).all()
    assert np.array_equal(t, times(100.0, 50, seed=7, start=1000.0))
    assert not np.array_equal(t, times(100.0, 50, seed=8, start=1000.0))


@pytest.mark.parametrize("rate", [0.0, -5.0, float("nan")])
def test_a_rate_that_is_not_positive_is_refused(rate):
    with pytest.raises(ValueError, match="rate must be positive"):
        next(poisson_arrivals(rate, np.random.default_rng(0)))
