"""A reporter that keeps the metrics it is told about and reads them when asked,
as every reporter here does (Prometheus at a scrape, log on its schedule, the
in-memory one on demand)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sidecar.metrics.registry import TrackedMetrics
from sidecar.metrics.reporters.base import MetricReporter

if TYPE_CHECKING:
    from sidecar.metrics.group import MetricGroup
    from sidecar.metrics.types import Metric


class TrackingReporter(MetricReporter):
    def __init__(self) -> None:
        self._tracked = TrackedMetrics()

    def open(self, config: Mapping[str, str]) -> None:
        pass

    def close(self) -> None:
        pass

    def notify_of_added_metric(self, metric: Metric, name: str, group: MetricGroup) -> None:
        self._tracked.add(metric, name, group)

    def notify_of_removed_metric(self, metric: Metric, name: str, group: MetricGroup) -> None:
        self._tracked.remove(metric, name, group)
