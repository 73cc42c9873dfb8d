"""Metrics actor: the one writer of the sidecar's metrics (group `gpuSidecar`).

Every other actor, and the event loop, reports here with `tell`; reporters
(Prometheus, log, in-memory, GetMetrics) read the metric objects from their own
threads. Timings arrive once per batch or per written message, as lists, so the
hot path pays one message per batch, not one per request.

The busiest senders (session, batcher, event loop) report through lazy inboxes
(actors/inbox.py): their messages wait until this actor is woken, at most once
per DELIVERY_INTERVAL_S, instead of waking it per message (on the hot path the
wake-ups cost more than the counting). Reads that must be exact drain them
first: GetCounts, and FlushMetrics, which the registry asks before a snapshot
(GetMetrics). The Prometheus endpoint and the log reporter read what has arrived,
at most DELIVERY_INTERVAL_S behind. docs/metrics.md lists every metric and the
stage boundaries of the latencies.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pykka

from actors.base import SidecarActor
from actors.inbox import LazyInbox, Wake, handle_wake
from actors.messages import (
    AnswersDropped,
    BatchExecuted,
    Connect,
    FlushMetrics,
    GetCounts,
    KServeAnswered,
    OutcomesCounted,
    QueueDepth,
    RegisterSource,
    ResponsesWritten,
)
from sidecar.clock import Clock
from sidecar.metrics.group import MetricGroup
from sidecar.metrics.types import Counter, Histogram, MeterView

log = logging.getLogger(__name__)

# Outcome (as the session counts it) -> counter name. Every received request
# ends in exactly one of these, or is still in flight.
OUTCOME_COUNTERS = {
    "succeeded": "requestsSucceeded",
    "rejected": "requestsRejected",
    "expired": "requestsExpired",
    "cancelled": "requestsCancelled",
    "failed": "requestsFailed",
    "invalid": "requestsInvalid",
}
US = 1e6  # latency histograms are in microseconds, like Flink's latency metrics
# The KServe front ends, each counted in group gpuSidecar.kserve.<protocol>.
KSERVE_PROTOCOLS = ("grpc", "http")
# How far behind the metric objects may be for readers that do not flush first.
DELIVERY_INTERVAL_S = 0.01


def reporting_to(metrics: pykka.ActorRef[Any]) -> LazyInbox:
    """A lazy inbox at the metrics actor, registered so that it is drained."""
    inbox = LazyInbox(metrics, DELIVERY_INTERVAL_S)
    metrics.tell(RegisterSource(inbox))
    return inbox


class MetricsActor(SidecarActor):

    def __init__(self, group: MetricGroup, clock: Clock, executors: int, histogram_window: int = 128) -> None:
        super().__init__()
        self._sources: list[LazyInbox] = []
        self._stopped = threading.Event()
        self._queue_depth = 0
        self._received = group.counter("requestsReceived")
        self._outcomes = {name: group.counter(metric) for name, metric in OUTCOME_COUNTERS.items()}
        group.gauge("queueDepth", lambda: self._queue_depth)
        group.gauge("inflightRequests", self._inflight)
        self._received_rate = group.meter("requestsPerSecond", MeterView(clock.now))

        def histogram(name: str, g: MetricGroup = group) -> Histogram:
            return g.histogram(name, Histogram(histogram_window))

        self._batch_size = histogram("batchSize")
        self._end_to_end = histogram("endToEndLatency")
        self._queue_wait = histogram("queueWaitLatency")
        self._formation = histogram("batchFormationLatency")
        self._compute = histogram("computeLatency")
        self._delivery = histogram("deliveryLatency")
        self._batches = group.counter("batchesExecuted")
        self._batches_failed = group.counter("batchesFailed")
        self._batch_rate = group.meter("batchesPerSecond", MeterView(clock.now))
        self._kserve: dict[str, tuple[Counter, Counter]] = {}
        for protocol in KSERVE_PROTOCOLS:
            kserve = group.add_group("kserve", protocol)
            self._kserve[protocol] = (kserve.counter("requests"), kserve.counter("requestsFailed"))
        # Running sums since start, for KServe's ModelStatistics (whose durations are
        # cumulative): seconds summed over items, and when the last batch ran (clock time).
        self._totals = {"queue_wait_s": 0.0, "compute_item_s": 0.0, "items_executed": 0, "end_to_end_s": 0.0, "written": 0}
        self._last_batch_at: float | None = None
        self._clock = clock
        self._per_instance: list[tuple[Counter, Histogram]] = []
        for i in range(executors):
            instance = group.add_group("instance", str(i))
            self._per_instance.append((instance.counter("batchesExecuted"), histogram("computeLatency", instance)))

    def on_start(self) -> None:
        threading.Thread(target=self._tick, name="metrics-ticker", daemon=True).start()

    def on_stop(self) -> None:
        self._stopped.set()

    def _tick(self) -> None:
        """Wakes this actor for what lazy senders left waiting (nobody else will)."""
        while not self._stopped.wait(DELIVERY_INTERVAL_S):
            for inbox in tuple(self._sources):
                if inbox.pending:
                    try:
                        inbox.wake()
                    except pykka.ActorDeadError:
                        return

    def _drain(self) -> None:
        for inbox in self._sources:
            for message in inbox.take():
                self.on_receive(message)

    def _inflight(self) -> int:
        """Received and not yet answered: the invariant of design.md, read off the counters."""
        return self._received.count - sum(c.count for c in self._outcomes.values())

    def on_receive(self, message: Any) -> Any:
        try:
            return self._handle(message)
        except Exception:  # a metrics bug must never take the metrics actor down
            log.exception("metrics: failed to record %s", type(message).__name__)
            return None

    def _handle(self, message: Any) -> Any:
        match message:
            case Wake():
                handle_wake(message, self.on_receive)
            case OutcomesCounted(counts):
                for name, n in counts:
                    if name == "received":
                        self._received.inc(n)
                        self._received_rate.mark_event(n)
                    else:
                        self._outcomes[name].inc(n)
            case BatchExecuted(executor, size, compute_s, ok, formation_s, queue_waits_s):
                self._batch_size.update(size)
                self._compute.update(compute_s * US)
                self._formation.update(formation_s * US)
                self._queue_wait.update_many([w * US for w in queue_waits_s])
                self._totals["queue_wait_s"] += sum(queue_waits_s)
                self._totals["compute_item_s"] += compute_s * size
                self._totals["items_executed"] += size
                self._last_batch_at = self._clock.now()
                self._batches.inc()
                self._batch_rate.mark_event()
                if not ok:
                    self._batches_failed.inc()
                batches, compute = self._per_instance[executor]
                batches.inc()
                compute.update(compute_s * US)
            case ResponsesWritten(end_to_end_s, delivery_s):
                self._end_to_end.update_many([t * US for t in end_to_end_s])
                self._delivery.update_many([t * US for t in delivery_s])
                self._totals["end_to_end_s"] += sum(end_to_end_s)
                self._totals["written"] += len(end_to_end_s)
            case KServeAnswered(protocol, requests, failed):
                answered, failures = self._kserve[protocol]
                answered.inc(requests)
                failures.inc(failed)
            case QueueDepth(depth):
                self._queue_depth = depth
            case AnswersDropped(outcomes):
                for name, n in outcomes:
                    self._outcomes[name].dec(n)
                    self._outcomes["cancelled"].inc(n)
            case GetCounts():
                self._drain()
                return self._counts()
            case FlushMetrics():
                self._drain()
            case RegisterSource(inbox):
                self._sources.append(inbox)
            case Connect():
                pass
            case _:
                log.error("metrics: unexpected message %r", message)
        return None

    def _counts(self) -> dict[str, Any]:
        outcomes = {name: c.count for name, c in self._outcomes.items() if c.count}
        if self._received.count:
            outcomes["received"] = self._received.count
        return {
            "outcomes": outcomes,
            "batch_sizes_seen": self._batch_size.count,
            "batches": self._batches.count,
            "batches_failed": self._batches_failed.count,
            "queue_depth": self._queue_depth,
            "inflight": self._inflight(),
            "totals": dict(self._totals),
            "last_batch_at": self._last_batch_at,
            "kserve": {p: {"requests": a.count, "failed": f.count} for p, (a, f) in self._kserve.items()},
        }
