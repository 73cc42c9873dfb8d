"""Per-subtask tallies of a SidecarAsyncFunction, shown through PyFlink's metric group.

PyFlink's counters and distributions only count on the thread that runs the
bundle (Beam keeps their container in a thread-local); the answers arrive on the
client's own thread, so updates made there would be lost. Gauges are read on the
bundle thread when a bundle finishes, so every figure here is a gauge over plain
tallies: the counts only grow (rate them in the reporter), and the latency gauges
cover the last LATENCY_WINDOW answers.

Each attempt sent counts in `requests` and ends in one of `succeeded`,
`retryable`, `failed`. Each tally has one writer: the client's thread, except
`retries`, which the retry strategy counts on PyFlink's own loop thread.
"""

from __future__ import annotations

from typing import Any

from sidecar.metrics.types import Histogram

LATENCY_WINDOW = 1024


class FunctionStats:
    __slots__ = ("requests", "succeeded", "retryable", "failed", "unsent", "resent", "retries", "latency_us", "client")

    def __init__(self) -> None:
        self.requests = 0  # records handed to the sidecar, each attempt counted
        self.succeeded = 0
        self.retryable = 0  # failed with a SidecarRetryableError
        self.failed = 0  # failed with a SidecarPermanentError
        self.unsent = 0  # records failed before an attempt: no sidecar (within their timeout), unencodable, closing
        self.resent = 0  # attempts sent again by ride_out, once the sidecar was back
        self.retries = 0  # retries the retry strategy scheduled
        self.client: Any = None  # the SidecarClient, once connected: it counts its reconnects
        self.latency_us = Histogram(LATENCY_WINDOW)  # submit to answer, successes only

    @property
    def reconnects(self) -> int:
        """Streams reopened after one died."""
        return 0 if self.client is None else self.client.reconnects

    @property
    def in_flight(self) -> int:
        # Read one after another while the client's thread counts: never below 0.
        return max(0, self.requests - self.succeeded - self.retryable - self.failed)

    def gauges(self) -> dict[str, Any]:
        """Name -> a callable giving the current int value, as PyFlink's gauge() takes."""
        latency = self.latency_us

        def quantile(q: float):
            return lambda: int(latency.statistics().quantile(q))

        return {
            "requests": lambda: self.requests,
            "succeeded": lambda: self.succeeded,
            "retryableErrors": lambda: self.retryable,
            "permanentErrors": lambda: self.failed,
            "unsent": lambda: self.unsent,
            "retries": lambda: self.retries,
            "resent": lambda: self.resent,
            "reconnects": lambda: self.reconnects,
            "inflight": lambda: self.in_flight,
            "latencyP50Us": quantile(0.5),
            "latencyP99Us": quantile(0.99),
            "latencyMaxUs": lambda: int(latency.statistics().max),
        }

    def register(self, group: Any) -> None:
        """Adds every gauge to a PyFlink MetricGroup (or anything with `gauge(name, fn)`)."""
        for name, read in self.gauges().items():
            group.gauge(name, read)
