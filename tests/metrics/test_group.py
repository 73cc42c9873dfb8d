"""Scopes, identifiers, logical scopes and variables of metric groups."""

from __future__ import annotations

import pytest

from sidecar.metrics.group import root_group
from sidecar.metrics.registry import MetricRegistry
from sidecar.metrics.types import Counter, Histogram


@pytest.fixture
def registry():
    return MetricRegistry()


@pytest.fixture
def root(registry):
    return root_group(registry, host="host-1", tm_id="tm-7")


def test_root_is_flinks_taskmanager_scope(root):
    assert root.scope_components == ("host-1", "taskmanager", "tm-7")
    assert root.logical_scope == "taskmanager"
    assert root.variables == {"<host>": "host-1", "<tm_id>": "tm-7"}
    assert root.metric_identifier("x") == "host-1.taskmanager.tm-7.x"


def test_subgroup_extends_scope_and_logical_scope(root):
    g = root.add_group("gpuSidecar")
    assert g.scope_components == ("host-1", "taskmanager", "tm-7", "gpuSidecar")
    assert g.logical_scope == "taskmanager.gpuSidecar"
    assert g.variables == root.variables
    assert g.metric_identifier("queueDepth") == "host-1.taskmanager.tm-7.gpuSidecar.queueDepth"


def test_adding_a_group_twice_returns_the_same_group(root):
    assert root.add_group("a") is root.add_group("a")
    assert root.add_group("k", "v") is root.add_group("k", "v")


def test_key_value_group_adds_key_and_value_to_scope_but_only_key_to_logical_scope(root):
    g = root.add_group("gpuSidecar").add_group("instance", "0")
    assert g.scope_components[-2:] == ("instance", "0")
    assert g.metric_identifier("busy") == "host-1.taskmanager.tm-7.gpuSidecar.instance.0.busy"
    assert g.logical_scope == "taskmanager.gpuSidecar.instance"
    assert g.variables == {"<host>": "host-1", "<tm_id>": "tm-7", "<instance>": "0"}


def test_values_of_one_key_share_the_logical_scope_and_differ_in_the_variable(root):
    side = root.add_group("gpuSidecar")
    a, b = side.add_group("instance", "0"), side.add_group("instance", "1")
    assert a.logical_scope == b.logical_scope
    assert (a.variables["<instance>"], b.variables["<instance>"]) == ("0", "1")
    # The key group is the plain group of that name.
    assert side.add_group("instance").scope_components == a.scope_components[:-1]


def test_variables_are_inherited_through_nested_key_value_groups(root):
    g = root.add_group("model", "resnet").add_group("instance", "2").add_group("stage")
    assert g.variables == {"<host>": "host-1", "<tm_id>": "tm-7", "<model>": "resnet", "<instance>": "2"}
    assert g.logical_scope == "taskmanager.model.instance.stage"


def test_variables_is_a_copy(root):
    root.variables["<host>"] = "changed"
    assert root.variables["<host>"] == "host-1"


def test_metric_helpers_register_and_return_the_metric(registry, root):
    g = root.add_group("gpuSidecar")
    c = g.counter("requests")
    given = Counter()
    assert g.counter("rejected", given) is given
    h = g.histogram("latencyMs", Histogram())
    gauge = g.gauge("queueDepth", lambda: 3)
    assert isinstance(c, Counter) and gauge.value == 3
    ids = {r.identifier: r.metric for r in registry.metrics()}
    assert ids["host-1.taskmanager.tm-7.gpuSidecar.latencyMs"] is h
    assert ids["host-1.taskmanager.tm-7.gpuSidecar.rejected"] is given


def test_registering_a_name_twice_in_a_group_names_the_identifier(registry, root):
    g = root.add_group("gpuSidecar")
    first = g.counter("requests")
    with pytest.raises(ValueError, match=r"host-1\.taskmanager\.tm-7\.gpuSidecar\.requests"):
        g.gauge("requests", lambda: 1)
    assert [r.metric for r in registry.metrics()] == [first]


def test_remove_unregisters_and_frees_the_name(registry, root):
    g = root.add_group("gpuSidecar")
    g.counter("requests")
    g.remove("requests")
    assert registry.metrics() == []
    g.counter("requests")  # the name may be used again
