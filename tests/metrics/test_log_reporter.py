"""The log reporter: one structured `metrics` event per report."""

from __future__ import annotations

import logging
import threading

import pytest

from sidecar.metrics.group import root_group
from sidecar.metrics.registry import MetricRegistry
from sidecar.metrics.reporters.log import LogReporter
from sidecar.metrics.types import Histogram, MeterView
from tests.fakes import FakeClock


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.emitted = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.emitted.set()


@pytest.fixture
def logger():
    log = logging.getLogger("sidecar.test.metrics")
    handler = Capture()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.capture = handler
    yield log
    log.removeHandler(handler)


def test_report_logs_one_event_with_a_field_per_metric(logger):
    clock = FakeClock(start=10.0)
    reporter = LogReporter(interval_s=60, logger=logger)
    registry = MetricRegistry([reporter])
    g = root_group(registry, "h", "tm").add_group("gpuSidecar")
    g.counter("requests").inc(3)
    g.gauge("queueDepth", lambda: 2)
    g.histogram("latencyMs", Histogram()).update_many([1.0, 2.0, 3.0, 10.0])
    g.meter("inferences", MeterView(clock.now, time_span_s=2)).mark_event(5)
    clock.advance(1.0)

    reporter.report()

    (record,) = logger.capture.records
    assert record.getMessage() == "metrics"
    p = "h.taskmanager.tm.gpuSidecar."
    assert record.sidecar_fields == {
        p + "inferences": 2.5,
        p + "latencyMs": "count=4 p50=2.5 p99=9.79 max=10",
        p + "queueDepth": 2.0,
        p + "requests": 3,
    }


def test_registry_drives_the_log_reporter_on_its_interval(logger):
    reporter = LogReporter(interval_s=0.01, logger=logger)
    registry = MetricRegistry([reporter])
    root_group(registry, "h", "tm").counter("requests").inc()
    registry.start()
    try:
        assert logger.capture.emitted.wait(5.0)
    finally:
        registry.close()
    assert logger.capture.records[0].sidecar_fields == {"h.taskmanager.tm.requests": 1}
