"""A scheduled reporter that logs every metric as one structured event.

    ... event=metrics h1.taskmanager.tm1.gpuSidecar.queueDepth=3 ...latency="count=10 p50=1.5 p99=9.1 max=9.3"
"""

from __future__ import annotations

import logging

from sidecar.logs import event
from sidecar.metrics.registry import MetricValue, read_value
from sidecar.metrics.reporters.tracking import TrackingReporter
from sidecar.metrics.reporters.base import ScheduledReporter

log = logging.getLogger(__name__)


class LogReporter(TrackingReporter, ScheduledReporter):
    def __init__(self, interval_s: float = 60, logger: logging.Logger = log) -> None:
        self.interval_s = interval_s
        self._logger = logger
        super().__init__()

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
