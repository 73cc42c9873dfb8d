"""When a client retries a request the server refused for lack of room.

Exponential backoff with full jitter, never sooner than the server's own
RetryInfo hint, and never past the request's own deadline: a retry that could
not be answered in time is not made.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sidecar.backoff import capped_exponential


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5  # the first try included
    initial_backoff_s: float = 0.005
    max_backoff_s: float = 1.0
    multiplier: float = 2.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial_backoff_s <= 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(f"invalid retry policy: {self}")
        if self.multiplier < 1:
            raise ValueError(f"retry multiplier must be >= 1, got {self.multiplier}")

    def delay_s(self, attempt: int, hint_s: float | None) -> float:
        """The wait before retry number `attempt` (1 = the first retry)."""
        ceiling = capped_exponential(self.initial_backoff_s, self.multiplier, attempt - 1, self.max_backoff_s)
        return max(hint_s or 0.0, self.rng.uniform(0.0, ceiling))

    def next_delay_s(self, attempt: int, hint_s: float | None, time_left_s: float) -> float | None:
        """The wait before retry `attempt`, or None when no retry should be made:
        attempts used up, or the retry could not land before the deadline."""
        if attempt >= self.max_attempts:
            return None
        delay = self.delay_s(attempt, hint_s)
        return delay if delay < time_left_s else None
