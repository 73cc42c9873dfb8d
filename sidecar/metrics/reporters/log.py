"""A scheduled reporter that logs every metric as one structured event.

    ... event=metrics h1.taskmanager.tm1.gpuSidecar.queueDepth=3 ...latency="count=10 p50=1.5 p99=9.1 max=9.3"
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sidecar.logs import event
from sidecar.metrics.group import MetricGroup
from sidecar.metrics.registry import MetricValue, TrackedMetrics, read_value
from sidecar.metrics.reporters.base import ScheduledReporter
from sidecar.metrics.types import Metric

log = logging.getLogger(__name__)


class LogReporter(ScheduledReporter):
    def __init__(self, interval_s: float = 60, logger: logging.Logger = log) -> None:
        self.interval_s = interval_s
        self._logger = logger
        self._tracked = TrackedMetrics()

    def open(self, config: Mapping[str, str]) -> None:
        pass

    def close(self) -> None:
        pass

    def notify_of_added_metric(self, metric: Metric, name: str, group: MetricGroup) -> None:
        self._tracked.add(metric, name, group)

    def notify_of_removed_metric(self, metric: Metric, name: str, group: MetricGroup) -> None:
        self._tracked.remove(metric, name, group)

    def report(self) -> None:
        fields = {v.identifier: _field(v) for v in map(read_value, self._tracked.all()) if v is not None}
        event(self._logger, "metrics", **fields)


def _field(v: MetricValue) -> int | float | str:
    match v.kind:
        case "counter":
            return v.count
        case "gauge":
            return v.value
        case "meter":
            return v.rate
        case "histogram":
            return f"count={v.count} p50={v.quantiles[0.5]:g} p99={v.quantiles[0.99]:g} max={v.max:g}"
