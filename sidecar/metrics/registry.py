"""The metric registry: who holds which metric, and who is told about it.

Mirrors Flink's MetricRegistryImpl. Groups register their metrics here; the
registry tells every reporter, opens and closes them, and runs each scheduled
reporter's `report()` on its own daemon thread. `snapshot()` reads every metric
once into plain values: what the GetMetrics RPC returns.
"""

from __future__ import annotations

import logging
import numbers
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sidecar.logs import event
from sidecar.metrics.group import MetricGroup
from sidecar.metrics.reporters.base import MetricReporter, ScheduledReporter
from sidecar.metrics.types import QUANTILES, Counter, Gauge, Histogram, Metric, MetricKind, kind_of

log = logging.getLogger(__name__)

# A scheduled reporter stuck in report() must not hold shutdown for long.
_JOIN_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class RegisteredMetric:
    metric: Metric
    name: str
    group: MetricGroup

    @property
    def identifier(self) -> str:
        return self.group.metric_identifier(self.name)


@dataclass(frozen=True, slots=True)
class MetricValue:
    """One metric read at one moment. Fields not of its kind stay at zero:
    counter -> count; gauge -> value; meter -> count, rate;
    histogram -> count and sum (all values ever), min..quantiles (the window)."""

    identifier: str
    name: str
    logical_scope: str
    variables: Mapping[str, str]  # `host`, not `<host>`
    kind: MetricKind
    count: int = 0
    value: float = 0.0
    rate: float = 0.0
    sum: float = 0.0
    min: float = 0.0
    max: float = 0.0
    mean: float = 0.0
    stddev: float = 0.0
    quantiles: Mapping[float, float] = field(default_factory=dict)


def read_value(registered: RegisteredMetric) -> MetricValue | None:
    """Reads a metric; None for a gauge that is not a number or whose function fails
    (a bad gauge must not break a scrape or an RPC)."""
    metric, group = registered.metric, registered.group
    kind = kind_of(metric)
    head = dict(
        identifier=registered.identifier,
        name=registered.name,
        logical_scope=group.logical_scope,
        variables=strip_brackets(group.variables),
        kind=kind,
    )
    try:
        if isinstance(metric, Counter):
            return MetricValue(**head, count=metric.count)
        if isinstance(metric, Gauge):
            value = metric.value
            return MetricValue(**head, value=float(value)) if isinstance(value, numbers.Real) else None
        if isinstance(metric, Histogram):
            stats = metric.statistics()
            return MetricValue(
                **head,
                count=metric.count,
                sum=metric.sum,
                min=stats.min,
                max=stats.max,
                mean=stats.mean,
                stddev=stats.stddev,
                quantiles=dict(zip(QUANTILES, stats.quantiles(QUANTILES))),
            )
        return MetricValue(**head, count=metric.count, rate=metric.rate)
    except Exception as e:  # noqa: BLE001 - user gauges and meters may raise anything
        event(log, "metric read failed", logging.DEBUG, identifier=registered.identifier, error=repr(e))
        return None


def strip_brackets(variables: Mapping[str, str]) -> dict[str, str]:
    return {(k[1:-1] if k.startswith("<") and k.endswith(">") else k): v for k, v in variables.items()}


class TrackedMetrics:
    """The metrics a reporter has been told about, by identifier; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, RegisteredMetric] = {}

    def add(self, metric: Metric, name: str, group: MetricGroup) -> None:
        registered = RegisteredMetric(metric, name, group)
        with self._lock:
            self._by_id[registered.identifier] = registered

    def remove(self, metric: Metric, name: str, group: MetricGroup) -> None:
        with self._lock:
            self._by_id.pop(group.metric_identifier(name), None)

    def all(self) -> list[RegisteredMetric]:
        with self._lock:
            return sorted(self._by_id.values(), key=lambda r: r.identifier)


class MetricRegistry:
    def __init__(self, reporters: Sequence[MetricReporter] = ()) -> None:
        self._lock = threading.Lock()
        self._reporters: list[MetricReporter] = list(reporters)
        self._metrics: dict[str, RegisteredMetric] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closed = False
        # Called before a snapshot, so that it includes every update sent before
        # it (the sidecar's metrics actor takes updates lazily: actors/metrics.py).
        self.before_snapshot: Callable[[], None] | None = None

    @property
    def reporters(self) -> tuple[MetricReporter, ...]:
        return tuple(self._reporters)

    def add_reporter(self, reporter: MetricReporter) -> None:
        """Before `start()` only; the reporter hears of metrics registered so far."""
        with self._lock:
            if self._started or self._closed:
                raise RuntimeError("reporters can only be added before the registry starts")
            self._reporters.append(reporter)
            for r in self._metrics.values():
                self._notify(reporter.notify_of_added_metric, r)

    def register(self, metric: Metric, name: str, group: MetricGroup) -> None:
        registered = RegisteredMetric(metric, name, group)
        with self._lock:
            if registered.identifier in self._metrics:
                raise ValueError(f"metric {registered.identifier} is already registered")
            self._metrics[registered.identifier] = registered
            if not self._closed:
                for reporter in self._reporters:
                    self._notify(reporter.notify_of_added_metric, registered)

    def unregister(self, metric: Metric, name: str, group: MetricGroup) -> None:
        identifier = group.metric_identifier(name)
        with self._lock:
            registered = self._metrics.get(identifier)
            if registered is None or registered.metric is not metric:
                return
            del self._metrics[identifier]
            if not self._closed:
                for reporter in self._reporters:
                    self._notify(reporter.notify_of_removed_metric, registered)

    @staticmethod
    def _notify(method: Callable[[Metric, str, MetricGroup], None], registered: RegisteredMetric) -> None:
        # As in Flink: one faulty reporter must not stop a metric from being registered.
        try:
            method(registered.metric, registered.name, registered.group)
        except Exception as e:  # noqa: BLE001
            event(log, "metric reporter failed", logging.WARNING, identifier=registered.identifier, error=repr(e))

    def start(self) -> None:
        """Opens the reporters (an error, e.g. a port in use, propagates) and
        starts one thread per scheduled reporter. A second call does nothing."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the metric registry is closed")
            if self._started:
                return
            self._started = True
            reporters = list(self._reporters)
        for reporter in reporters:
            reporter.open({})
        for reporter in reporters:
            if isinstance(reporter, ScheduledReporter):
                t = threading.Thread(
                    target=self._run_scheduled, args=(reporter,), name=f"metrics-{type(reporter).__name__}", daemon=True
                )
                self._threads.append(t)
                t.start()

    def _run_scheduled(self, reporter: ScheduledReporter) -> None:
        # Event.wait rather than sleep: close() wakes every thread at once.
        while not self._stop.wait(reporter.interval_s):
            try:
                reporter.report()
            except Exception as e:  # noqa: BLE001 - keep reporting after one bad round
                event(log, "metric report failed", logging.WARNING, reporter=type(reporter).__name__, error=repr(e))

    def close(self) -> None:
        """Stops the scheduled threads and closes every reporter; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            reporters = list(self._reporters)
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(_JOIN_TIMEOUT_S)
        for reporter in reporters:
            try:
                reporter.close()
            except Exception as e:  # noqa: BLE001 - close the others regardless
                event(log, "metric reporter close failed", logging.WARNING, reporter=type(reporter).__name__, error=repr(e))

    def metrics(self) -> list[RegisteredMetric]:
        with self._lock:
            return sorted(self._metrics.values(), key=lambda r: r.identifier)

    def snapshot(self) -> list[MetricValue]:
        """Every metric read once, by identifier; non-numeric gauges left out."""
        if self.before_snapshot is not None:
            try:
                self.before_snapshot()
            except Exception as e:  # noqa: BLE001 - a read of what has arrived beats no read
                event(log, "metrics flush before snapshot failed", logging.WARNING, error=repr(e))
        return [v for v in map(read_value, self.metrics()) if v is not None]
