"""The Prometheus reporter over real HTTP, parsed with prometheus_client's parser."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from sidecar.metrics.group import root_group
from sidecar.metrics.registry import MetricRegistry
from sidecar.metrics.reporters.prometheus import PrometheusReporter, prometheus_name
from sidecar.metrics.types import QUANTILES, Histogram, MeterView
from tests.fakes import FakeClock

LATENCIES = np.random.default_rng(7).gamma(2.0, 3.0, size=200)  # more than one window
BASE = {"host": "h1", "tm_id": "tm-1"}


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


@pytest.fixture
def running():
    clock = FakeClock(start=50.0)
    reporter = PrometheusReporter(port=0, host="127.0.0.1")
    registry = MetricRegistry([reporter])
    side = root_group(registry, "h1", "tm-1").add_group("gpuSidecar")
    side.counter("rejected").inc(9)
    side.gauge("queueDepth", lambda: 3)
    side.gauge("backend", lambda: "onnx")  # not a number: skipped
    side.histogram("latencyMs", Histogram()).update_many(LATENCIES.tolist())
    side.meter("inferences", MeterView(clock.now, time_span_s=4)).mark_event(10)
    clock.advance(1.0)
    side.add_group("instance", "0").gauge("busy", lambda: 1)
    side.add_group("instance", "1").gauge("busy", lambda: 0)
    registry.start()
    yield registry, reporter, side
    registry.close()


def test_names_follow_flinks_prometheus_reporter(running):
    _, reporter, _ = running
    assert set(scrape(reporter.port)) == {
        "flink_taskmanager_gpuSidecar_rejected",
        "flink_taskmanager_gpuSidecar_queueDepth",
        "flink_taskmanager_gpuSidecar_latencyMs",
        "flink_taskmanager_gpuSidecar_inferences",
        "flink_taskmanager_gpuSidecar_instance_busy",
    }


def test_counters_gauges_and_meters_are_gauges_labelled_with_the_variables(running):
    _, reporter, _ = running
    families = scrape(reporter.port)
    labels = tuple(sorted(BASE.items()))
    for name, value in [("rejected", 9.0), ("queueDepth", 3.0), ("inferences", 2.5)]:
        family = families["flink_taskmanager_gpuSidecar_" + name]
        assert family.type == "gauge"
        assert samples(family) == {(family.name, labels): value}


def test_instances_share_one_family_told_apart_by_a_label(running):
    _, reporter, _ = running
    family = scrape(reporter.port)["flink_taskmanager_gpuSidecar_instance_busy"]
    assert family.type == "gauge"
    assert samples(family) == {
        (family.name, tuple(sorted({**BASE, "instance": "0"}.items()))): 1.0,
        (family.name, tuple(sorted({**BASE, "instance": "1"}.items()))): 0.0,
    }


def test_histogram_is_a_summary_with_numpys_quantiles_of_the_window(running):
    _, reporter, _ = running
    family = scrape(reporter.port)["flink_taskmanager_gpuSidecar_latencyMs"]
    assert family.type == "summary"
    got = samples(family)
    window = LATENCIES[-128:]
    expected = {
        (family.name, tuple(sorted({**BASE, "quantile": str(q)}.items()))): float(np.quantile(window, q))
        for q in QUANTILES
    }
    expected[(family.name + "_count", tuple(sorted(BASE.items())))] = 200.0
    expected[(family.name + "_sum", tuple(sorted(BASE.items())))] = float(LATENCIES.sum())
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key


def test_values_are_read_at_each_scrape(running):
    _, reporter, side = running
    depth = [1]
    side.gauge("inFlight", lambda: depth[0])
    assert samples(scrape(reporter.port)["flink_taskmanager_gpuSidecar_inFlight"])
    depth[0] = 4
    (value,) = samples(scrape(reporter.port)["flink_taskmanager_gpuSidecar_inFlight"]).values()
    assert value == 4.0
    side.remove("inFlight")
    assert "flink_taskmanager_gpuSidecar_inFlight" not in scrape(reporter.port)


def test_the_process_wide_prometheus_registry_is_left_alone(running):
    _, reporter, _ = running
    scrape(reporter.port)
    assert REGISTRY.get_sample_value("flink_taskmanager_gpuSidecar_queueDepth", BASE) is None


def test_close_frees_the_port():
    reporter = PrometheusReporter(port=0, host="127.0.0.1")
    registry = MetricRegistry([reporter])
    registry.start()
    port = reporter.port
    assert port != 0
    scrape(port)
    registry.close()
    with pytest.raises(urllib.error.URLError):
        scrape(port)
    again = PrometheusReporter(port=port, host="127.0.0.1")
    again.open({})
    try:
        assert again.port == port
        scrape(port)
    finally:
        again.close()


def test_names_replace_characters_prometheus_does_not_allow():
    assert prometheus_name("taskmanager.gpu-sidecar", "p99 latency/ms") == "flink_taskmanager_gpu_sidecar_p99_latency_ms"
    assert prometheus_name("taskmanager", "a:b_c") == "flink_taskmanager_a:b_c"


def test_listens_on_every_interface_by_default():
    reporter = PrometheusReporter(port=0)
    reporter.open({})
    try:
        assert "flink_" not in str(scrape(reporter.port))  # reachable, and empty
    finally:
        reporter.close()
    reporter.close()  # a second close is harmless
