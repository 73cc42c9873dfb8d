"""The reporter interface, after org.apache.flink.metrics.reporter.

The registry calls `notify_of_added_metric`/`notify_of_removed_metric` as
metrics come and go (possibly before `open`, and from any thread), `open` once
at start and `close` once at shutdown. A `ScheduledReporter` also gets
`report()` every `interval_s` seconds from its own thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sidecar.metrics.group import MetricGroup
    from sidecar.metrics.types import Metric


class MetricReporter(ABC):
    @abstractmethod
    def open(self, config: Mapping[str, str]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def notify_of_added_metric(self, metric: Metric, name: str, group: MetricGroup) -> None: ...

    @abstractmethod
    def notify_of_removed_metric(self, metric: Metric, name: str, group: MetricGroup) -> None: ...


class ScheduledReporter(MetricReporter):
    interval_s: float = 60.0

    @abstractmethod
    def report(self) -> None: ...
