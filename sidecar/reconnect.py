"""When a client whose stream died opens a new one.

Off by default: pass `reconnect=ReconnectPolicy()` to SidecarClient. Attempt n
waits `min(max_s, initial_s * multiplier ** (n - 1))`, less up to `jitter` of it
at random (so clients that lost the same server spread out), never more than
`max_s`. An attempt opens a fresh channel and succeeds only when grpc.health.v1
(service "") answers SERVING within `health_timeout_s`: a draining or loading
server is left alone. `max_attempts=None` tries until the client is closed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sidecar.backoff import capped_exponential


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    initial_s: float = 0.1
    max_s: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2  # a fraction of the delay, taken off at random
    max_attempts: int | None = None
    health_timeout_s: float = 1.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s) or self.multiplier < 1 or not (0 <= self.jitter < 1):
            raise ValueError(f"invalid reconnect policy: {self}")
        if self.health_timeout_s <= 0 or (self.max_attempts is not None and self.max_attempts < 1):
            raise ValueError(f"invalid reconnect policy: {self}")

    def delay_s(self, attempt: int) -> float:
        """The wait before attempt number `attempt` (1 = the first after the stream died)."""
        ceiling = capped_exponential(self.initial_s, self.multiplier, attempt - 1, self.max_s)
        return ceiling * (1.0 - self.jitter * self.rng.random())

    def gives_up_after(self, attempt: int) -> bool:
        """Whether no attempt follows attempt number `attempt`."""
        return self.max_attempts is not None and attempt >= self.max_attempts
