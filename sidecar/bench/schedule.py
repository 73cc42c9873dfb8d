"""Open-loop arrival times: a Poisson process, i.e. exponential gaps between arrivals.

An open loop sends at these times whatever is outstanding, so a slow server
cannot slow the offered load down (as it does in a closed loop); that is what
makes queueing, refusals and tail latency under a given rate visible.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Gaps are drawn this many at a time: one numpy call per chunk, not one per arrival.
CHUNK = 4096


def poisson_arrivals(rate: float, rng: np.random.Generator, start: float = 0.0) -> Iterator[float]:
    """Absolute arrival times after `start`, `rate` per second on average, without end."""
    if not rate > 0:
        raise ValueError(f"rate must be positive, not {rate!r}")
    t = start
    while True:
        for gap in rng.exponential(1.0 / rate, CHUNK):
            t += float(gap)
            yield t
