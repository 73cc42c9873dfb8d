"""A reporter that only remembers: tests look metrics up by identifier."""

from __future__ import annotations

import re

from sidecar.metrics.reporters.tracking import TrackingReporter
from sidecar.metrics.types import Metric


class InMemoryReporter(TrackingReporter):
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
