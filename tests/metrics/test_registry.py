"""The registry: notifying reporters, driving scheduled ones, snapshots."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import pytest

from sidecar.metrics.group import root_group
from sidecar.metrics.registry import MetricRegistry, RegisteredMetric
from sidecar.metrics.reporters.base import MetricReporter, ScheduledReporter
from sidecar.metrics.types import QUANTILES, Histogram, MeterView
from tests.fakes import FakeClock

WAIT_S = 5.0  # bound for waits on other threads; they normally take milliseconds


class RecordingReporter(MetricReporter):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def open(self, config: Mapping[str, str]) -> None:
        self.calls.append(("open",))

    def close(self) -> None:
        self.calls.append(("close",))

    def notify_of_added_metric(self, metric, name, group) -> None:
        self.calls.append(("added", group.metric_identifier(name), metric))

    def notify_of_removed_metric(self, metric, name, group) -> None:
        self.calls.append(("removed", group.metric_identifier(name), metric))


class SignallingReporter(RecordingReporter, ScheduledReporter):
    """Sets `reported` from its report thread; the first `fail` reports raise."""

    def __init__(self, interval_s: float, fail: int = 0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.reported = threading.Event()
        self.thread: threading.Thread | None = None
        self._fail = fail

    def report(self) -> None:
        self.thread = threading.current_thread()
        if self._fail:
            self._fail -= 1
            raise RuntimeError("report failed")
        self.reported.set()


class BrokenReporter(RecordingReporter):
    def notify_of_added_metric(self, metric, name, group) -> None:
        raise RuntimeError("broken")


def test_every_reporter_hears_of_added_and_removed_metrics():
    a, b = RecordingReporter(), RecordingReporter()
    registry = MetricRegistry([a, b])
    g = root_group(registry, "h", "tm").add_group("gpuSidecar")
    c = g.counter("requests")
    g.remove("requests")
    expected = [("added", "h.taskmanager.tm.gpuSidecar.requests", c), ("removed", "h.taskmanager.tm.gpuSidecar.requests", c)]
    assert a.calls == expected and b.calls == expected


def test_a_reporter_added_later_hears_of_metrics_registered_before():
    registry = MetricRegistry()
    c = root_group(registry, "h", "tm").counter("requests")
    late = RecordingReporter()
    registry.add_reporter(late)
    assert late.calls == [("added", "h.taskmanager.tm.requests", c)]


def test_reporters_cannot_be_added_after_start():
    registry = MetricRegistry()
    registry.start()
    with pytest.raises(RuntimeError, match="before the registry starts"):
        registry.add_reporter(RecordingReporter())
    registry.close()


def test_a_failing_reporter_does_not_stop_registration_or_the_others():
    good = RecordingReporter()
    registry = MetricRegistry([BrokenReporter(), good])
    c = root_group(registry, "h", "tm").counter("requests")
    assert [r.metric for r in registry.metrics()] == [c]
    assert good.calls == [("added", "h.taskmanager.tm.requests", c)]


def test_the_same_identifier_from_two_groups_is_refused():
    registry = MetricRegistry()
    root = root_group(registry, "h", "tm")
    root.add_group("a.b").counter("x")
    with pytest.raises(ValueError, match=r"h\.taskmanager\.tm\.a\.b\.x is already registered"):
        root.add_group("a").add_group("b").counter("x")
    root.add_group("a").add_group("b").counter("y")  # the failed name did not stick


def test_start_opens_and_close_closes_each_reporter_once():
    r = RecordingReporter()
    registry = MetricRegistry([r])
    registry.start()
    registry.start()
    registry.close()
    registry.close()
    assert r.calls == [("open",), ("close",)]
    with pytest.raises(RuntimeError, match="closed"):
        registry.start()


def test_scheduled_reporter_reports_from_its_own_thread_until_closed():
    r = SignallingReporter(interval_s=0.01)
    registry = MetricRegistry([r])
    registry.start()
    assert r.reported.wait(WAIT_S)
    assert r.thread is not threading.current_thread() and r.thread.daemon
    registry.close()
    assert not r.thread.is_alive()
    assert r.calls[-1] == ("close",)


def test_close_wakes_a_reporter_waiting_out_a_long_interval():
    r = SignallingReporter(interval_s=3600)
    registry = MetricRegistry([r])
    registry.start()
    (thread,) = [t for t in threading.enumerate() if t.name == "metrics-SignallingReporter"]
    registry.close()
    assert not thread.is_alive()  # close() joined it well within its 5 s bound
    assert not r.reported.is_set()


def test_a_failed_report_does_not_stop_the_schedule():
    r = SignallingReporter(interval_s=0.01, fail=2)
    registry = MetricRegistry([r])
    registry.start()
    try:
        assert r.reported.wait(WAIT_S)
    finally:
        registry.close()


def test_registered_metric_knows_its_identifier():
    registry = MetricRegistry()
    g = root_group(registry, "h", "tm").add_group("gpuSidecar")
    c = g.counter("requests")
    assert registry.metrics() == [RegisteredMetric(c, "requests", g)]
    assert registry.metrics()[0].identifier == "h.taskmanager.tm.gpuSidecar.requests"


def test_snapshot_reads_every_metric_into_plain_values():
    clock = FakeClock(start=100.0)
    registry = MetricRegistry()
    g = root_group(registry, "h", "tm").add_group("gpuSidecar")
    g.counter("requests").inc(4)
    g.add_group("instance", "0").gauge("busy", lambda: True)
    g.gauge("queueDepth", lambda: 3)
    g.gauge("version", lambda: "1.2")  # not a number: left out
    g.histogram("latencyMs", Histogram()).update_many([1.0, 2.0, 3.0, 4.0])
    meter = g.meter("inferences", MeterView(clock.now, time_span_s=10))
    meter.mark_event(20)
    clock.advance(1.0)

    by_id = {v.identifier: v for v in registry.snapshot()}
    p = "h.taskmanager.tm.gpuSidecar."
    assert sorted(by_id) == [p + n for n in ("inferences", "instance.0.busy", "latencyMs", "queueDepth", "requests")]

    requests = by_id[p + "requests"]
    assert (requests.kind, requests.count, requests.name) == ("counter", 4, "requests")
    assert requests.logical_scope == "taskmanager.gpuSidecar"
    assert requests.variables == {"host": "h", "tm_id": "tm"}

    busy = by_id[p + "instance.0.busy"]
    assert (busy.kind, busy.value, busy.logical_scope) == ("gauge", 1.0, "taskmanager.gpuSidecar.instance")
    assert busy.variables == {"host": "h", "tm_id": "tm", "instance": "0"}
    assert by_id[p + "queueDepth"].value == 3.0

    lat = by_id[p + "latencyMs"]
    assert (lat.kind, lat.count, lat.sum, lat.min, lat.max, lat.mean) == ("histogram", 4, 10.0, 1.0, 4.0, 2.5)
    assert lat.stddev == pytest.approx(1.2909944487)
    assert list(lat.quantiles) == list(QUANTILES)
    assert lat.quantiles[0.5] == 2.5

    inferences = by_id[p + "inferences"]
    assert (inferences.kind, inferences.count, inferences.rate) == ("meter", 20, 2.0)


def test_snapshot_leaves_out_a_gauge_whose_function_raises():
    registry = MetricRegistry()
    root = root_group(registry, "h", "tm")
    root.gauge("bad", lambda: 1 / 0)
    root.gauge("good", lambda: 1)
    assert [v.name for v in registry.snapshot()] == ["good"]
