"""A reporter that only remembers: tests look metrics up by identifier."""

from __future__ import annotations

import re
from collections.abc import Mapping

from sidecar.metrics.group import MetricGroup
from sidecar.metrics.registry import TrackedMetrics
from sidecar.metrics.reporters.base import MetricReporter
from sidecar.metrics.types import Metric


class InMemoryReporter(MetricReporter):
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

    def find(self, pattern: str) -> dict[str, Metric]:
        """Metrics whose identifier contains a match of the regular expression."""
        regex = re.compile(pattern)
        return {r.identifier: r.metric for r in self._tracked.all() if regex.search(r.identifier)}

    def value(self, identifier_suffix: str) -> Metric:
        """The one metric whose identifier ends with '.' + suffix, e.g.
        `value("gpuSidecar.queueDepth")`; KeyError unless exactly one matches."""
        found = [
            r
            for r in self._tracked.all()
            if r.identifier == identifier_suffix or r.identifier.endswith("." + identifier_suffix)
        ]
        if len(found) != 1:
            candidates = [r.identifier for r in (found or self._tracked.all())]
            raise KeyError(f"{len(found)} metrics end with {identifier_suffix!r}; candidates: {candidates}")
        return found[0].metric
