"""The in-memory reporter tests use to find metrics."""

from __future__ import annotations

import pytest

from sidecar.metrics.group import root_group
from sidecar.metrics.registry import MetricRegistry
from sidecar.metrics.reporters.memory import InMemoryReporter


@pytest.fixture
def setup():
    reporter = InMemoryReporter()
    registry = MetricRegistry([reporter])
    side = root_group(registry, "h", "tm").add_group("gpuSidecar")
    return reporter, side


def test_value_finds_the_one_metric_by_identifier_suffix(setup):
    reporter, side = setup
    g = side.gauge("queueDepth", lambda: 5)
    assert reporter.value("gpuSidecar.queueDepth") is g
    assert reporter.value("queueDepth").value == 5


def test_value_matches_whole_components_only(setup):
    reporter, side = setup
    side.counter("depth")
    with pytest.raises(KeyError, match="0 metrics end with 'Depth'"):
        reporter.value("Depth")


def test_value_refuses_an_ambiguous_suffix_and_lists_candidates(setup):
    reporter, side = setup
    side.add_group("instance", "0").counter("busy")
    side.add_group("instance", "1").counter("busy")
    with pytest.raises(KeyError, match=r"2 metrics .*instance\.0\.busy.*instance\.1\.busy"):
        reporter.value("busy")


def test_find_searches_identifiers_with_a_regex(setup):
    reporter, side = setup
    a = side.add_group("instance", "0").counter("busy")
    b = side.add_group("instance", "1").counter("busy")
    side.counter("requests")
    assert reporter.find(r"instance\.\d+\.busy$") == {
        "h.taskmanager.tm.gpuSidecar.instance.0.busy": a,
        "h.taskmanager.tm.gpuSidecar.instance.1.busy": b,
    }


def test_removed_metrics_are_forgotten(setup):
    reporter, side = setup
    side.counter("requests")
    side.remove("requests")
    assert reporter.find("") == {}
