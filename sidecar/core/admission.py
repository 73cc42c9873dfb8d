"""Admission: decides at once whether a request may wait in the queue.

Rules (everything that decides admission lives here):
- A request is admitted while the queue holds fewer than `max_queue_length`
  requests; otherwise it is rejected RESOURCE_EXHAUSTED, with depth and limit in
  the message and a retry hint derived from the rate the queue has been draining.
- An admitted request must leave the queue by its `expires_at`: the earlier of
  admission + `max_queue_wait` and its own deadline (received + client timeout).
  The batcher enforces that; admission only computes it.
- While draining, every request is rejected UNAVAILABLE.

Depth is admitted minus released, where the batcher reports the total it has
released (dispatched, expired or withdrawn). Reports arrive after the fact, so the
depth seen here is never below the true depth: the limit can only be over-enforced,
never exceeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sidecar.core.request import Request
from sidecar.core.status import Code, Failure

# How fast the drain-rate estimate follows changes (weight of the newest sample).
_RATE_SMOOTHING = 0.2
# Retry hints are never shorter than this: a client retrying sooner only adds load.
MIN_RETRY_AFTER_S = 0.001


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    max_queue_length: int
    max_queue_wait_s: float


@dataclass(frozen=True, slots=True)
class Admitted:
    requests: tuple[Request, ...]
    admitted_at: float
    # Latest moment each request may leave the queue; the batcher takes the
    # earlier of this and the request's own deadline.
    queue_deadline: float


@dataclass(frozen=True, slots=True)
class AdmissionResult:
    admitted: Admitted | None
    rejected: tuple[tuple[Request, Failure], ...]


class Admission:
    def __init__(self, limits: AdmissionLimits) -> None:
        self._limits = limits
        self._admitted_total = 0
        self._released_total = 0
        self._draining = False
        self._rate: float | None = None  # items released per second, smoothed
        self._last_release: tuple[float, int] | None = None  # (when, released_total)

    @property
    def depth(self) -> int:
        return self._admitted_total - self._released_total

    @property
    def draining(self) -> bool:
        return self._draining

    def admit(self, requests: Sequence[Request], now: float) -> AdmissionResult:
        if self._draining:
            failure = Failure(Code.UNAVAILABLE, "server is draining and accepts no new requests")
            return AdmissionResult(None, tuple((r, failure) for r in requests))
        room = max(0, self._limits.max_queue_length - self.depth)
        taken = tuple(requests[:room])
        self._admitted_total += len(taken)
        rejected: tuple[tuple[Request, Failure], ...] = ()
        if len(taken) < len(requests):
            failure = self._queue_full()
            rejected = tuple((r, failure) for r in requests[room:])
        admitted = Admitted(taken, now, now + self._limits.max_queue_wait_s) if taken else None
        return AdmissionResult(admitted, rejected)

    def released(self, released_total: int, now: float) -> None:
        """The batcher has released `released_total` requests since start."""
        if released_total <= self._released_total:
            return  # a late report: totals only grow
        if self._last_release is not None:
            then, before = self._last_release
            if now > then:
                sample = (released_total - before) / (now - then)
                self._rate = sample if self._rate is None else self._rate + _RATE_SMOOTHING * (sample - self._rate)
        self._last_release = (now, released_total)
        self._released_total = released_total

    def drain(self) -> None:
        self._draining = True

    def retry_after_s(self) -> float:
        """Roughly how long until the queue has room again, bounded by the max wait."""
        limit = self._limits.max_queue_wait_s
        if not self._rate:
            return limit
        return min(limit, max(MIN_RETRY_AFTER_S, self.depth / self._rate))

    def _queue_full(self) -> Failure:
        retry = self.retry_after_s()
        return Failure(
            Code.RESOURCE_EXHAUSTED,
            f"queue is full: {self.depth} queued, limit {self._limits.max_queue_length}; "
            f"retry after {retry * 1000:.1f} ms",
            retry_after_s=retry,
        )
