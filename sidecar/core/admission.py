"""Admission: decides at once whether a request may wait in the queue.

Rules (everything that decides admission lives here):
- A request is admitted while the queue holds fewer than `max_queue_length`
  requests and its stream fewer than `max_per_stream`; otherwise it is rejected
  RESOURCE_EXHAUSTED, with the depth and the limit in the message and a retry
  hint: depth / the rate the queue has been draining; before the first drain-rate
  sample, depth / the batcher's service-rate estimate (batch size x executors up /
  compute estimate, or / the batch window before any batch was timed); with
  neither, the max queue wait. Always within [MIN_RETRY_AFTER_S, max queue wait].
- An admitted request must leave the queue by its queue deadline (admission +
  `max_queue_wait`); the batcher enforces that, and the request's own deadline.
- While draining, every request is rejected UNAVAILABLE.

Depth is admitted minus released, per stream, where the batcher reports what
left its queue (dispatched, expired, withdrawn) and what came back (requeued
when an executor was replaced). Reports arrive after the fact, so the depth seen
here is never below the true depth: limits can only be over-enforced, never
exceeded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
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
    max_per_stream: int | None = None  # None: a stream may use the whole queue


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
        self._depth = 0
        self._by_stream: Counter[int] = Counter()
        self._draining = False
        self._rate: float | None = None  # items released per second, smoothed
        self._last_release: float | None = None
        self._released_since = 0
        self._service_rate: float | None = None  # the batcher's estimate, items per second

    def sizes(self) -> dict[str, int]:
        """Its long-lived structures' sizes, for the memory report (docs/soak.md)."""
        return {"depth": self._depth, "streams": len(self._by_stream)}

    @property
    def depth(self) -> int:
        return self._depth

    def stream_depth(self, stream: int) -> int:
        return self._by_stream[stream]

    @property
    def draining(self) -> bool:
        return self._draining

    def admit(self, requests: Sequence[Request], now: float) -> AdmissionResult:
        if self._draining:
            failure = Failure(Code.UNAVAILABLE, "server is draining and accepts no new requests")
            return AdmissionResult(None, tuple((r, failure) for r in requests))
        limits = self._limits
        per_stream = limits.max_per_stream
        taken: list[Request] = []
        rejected: list[tuple[Request, Failure]] = []
        for r in requests:
            if self._depth >= limits.max_queue_length:
                rejected.append((r, self._full(f"queue is full: {self._depth} queued, limit {limits.max_queue_length}")))
            elif per_stream is not None and self._by_stream[r.stream] >= per_stream:
                n = self._by_stream[r.stream]
                rejected.append((r, self._full(f"this stream has {n} requests queued, per-stream limit {per_stream}")))
            else:
                taken.append(r)
                self._depth += 1
                self._by_stream[r.stream] += 1
        admitted = Admitted(tuple(taken), now, now + limits.max_queue_wait_s) if taken else None
        return AdmissionResult(admitted, tuple(rejected))

    def released(self, by_stream: Iterable[tuple[int, int]], now: float) -> None:
        """The batcher reports, per stream, how many left its queue (negative: came back)."""
        left = 0
        for stream, n in by_stream:
            self._depth -= n
            self._by_stream[stream] -= n
            if self._by_stream[stream] <= 0:
                del self._by_stream[stream]
            left += max(0, n)
        self._observe_rate(left, now)

    def drain(self) -> None:
        self._draining = True

    def service_rate(self, per_s: float | None) -> None:
        """The batcher's estimate of how many requests a second it can serve now."""
        self._service_rate = per_s

    def retry_after_s(self) -> float:
        """Roughly how long until the queue has room again, bounded by the max wait."""
        limit = self._limits.max_queue_wait_s
        rate = self._rate or self._service_rate  # measured, else estimated
        if not rate:
            return limit
        return min(limit, max(MIN_RETRY_AFTER_S, self._depth / rate))

    def _observe_rate(self, left: int, now: float) -> None:
        """Smooths the drain rate over intervals of at least a millisecond."""
        if self._last_release is None:
            self._last_release = now
            return
        self._released_since += left
        elapsed = now - self._last_release
        if elapsed >= 0.001:
            sample = self._released_since / elapsed
            self._rate = sample if self._rate is None else self._rate + _RATE_SMOOTHING * (sample - self._rate)
            self._last_release, self._released_since = now, 0

    def _full(self, why: str) -> Failure:
        retry = self.retry_after_s()
        return Failure(Code.RESOURCE_EXHAUSTED, f"{why}; retry after {retry * 1000:.1f} ms", retry_after_s=retry)
