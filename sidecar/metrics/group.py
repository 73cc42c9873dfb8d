"""Metric groups: where a metric sits, and so what it is called.

Mirrors Flink's AbstractMetricGroup. Each group has
  - scope components: the path that prefixes a metric's identifier
    (`host-1.taskmanager.tm-7.gpuSidecar.queueDepth`);
  - a logical scope: the same path with the variable parts left out
    (`taskmanager.gpuSidecar`), which is what Prometheus names are made of;
  - variables: the left-out parts by name (`<host>`, `<tm_id>`, ...), which
    become Prometheus labels.

`add_group(key, value)` adds two components, key then value, like Flink's
GenericKeyMetricGroup/GenericValueMetricGroup pair: only `key` joins the
logical scope and `<key>` = value joins the variables, so one metric per
instance ends up as one Prometheus family with an `instance` label.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from sidecar.metrics.types import Counter, Gauge, Histogram, Meter

if TYPE_CHECKING:
    from sidecar.metrics.registry import MetricRegistry

M = TypeVar("M")

DELIMITER = "."


class MetricGroup:
    def __init__(
        self,
        registry: MetricRegistry,
        scope_components: tuple[str, ...],
        logical_components: tuple[str, ...],
        variables: Mapping[str, str],
    ) -> None:
        self._registry = registry
        self._scope = scope_components
        self._logical = logical_components
        self._variables = dict(variables)
        # Children are keyed by (component, is-value-group) so that add_group("a")
        # twice returns the same group, as in Flink.
        self._children: dict[tuple[str, bool], MetricGroup] = {}
        self._metrics: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- where this group sits -------------------------------------------------

    @property
    def scope_components(self) -> tuple[str, ...]:
        return self._scope

    @property
    def logical_scope(self) -> str:
        return DELIMITER.join(self._logical)

    @property
    def variables(self) -> dict[str, str]:
        """Inherited and own variables, keys in Flink's `<name>` form."""
        return dict(self._variables)

    def metric_identifier(self, name: str) -> str:
        return DELIMITER.join((*self._scope, name))

    # --- children --------------------------------------------------------------

    def add_group(self, name: str, value: str | None = None) -> MetricGroup:
        """`add_group(name)`: a plain subgroup. `add_group(key, value)`: a key
        group holding a value group; returns the value group."""
        if value is None:
            return self._child(name, value_of=None)
        return self._child(name, value_of=None)._child(value, value_of=name)

    def _child(self, component: str, value_of: str | None) -> MetricGroup:
        with self._lock:
            child = self._children.get((component, value_of is not None))
            if child is None:
                if value_of is None:
                    logical, variables = (*self._logical, component), self._variables
                else:  # a value group: its value is a variable, not part of the logical scope
                    logical, variables = self._logical, {**self._variables, f"<{value_of}>": component}
                child = MetricGroup(self._registry, (*self._scope, component), logical, variables)
                self._children[(component, value_of is not None)] = child
            return child

    # --- metrics ---------------------------------------------------------------

    def counter(self, name: str, counter: Counter | None = None) -> Counter:
        return self._add(name, counter if counter is not None else Counter())

    def gauge(self, name: str, fn: Callable[[], Any]) -> Gauge:
        return self._add(name, Gauge(fn))

    def histogram(self, name: str, histogram: Histogram) -> Histogram:
        return self._add(name, histogram)

    def meter(self, name: str, meter: Meter) -> Meter:
        return self._add(name, meter)

    def remove(self, name: str) -> None:
        """Unregisters a metric of this group (e.g. when its instance goes away)."""
        with self._lock:
            metric = self._metrics.pop(name)
        self._registry.unregister(metric, name, self)

    def _add(self, name: str, metric: M) -> M:
        with self._lock:
            if name in self._metrics:
                raise ValueError(f"metric {self.metric_identifier(name)} is already registered")
            self._metrics[name] = metric
        try:
            self._registry.register(metric, name, self)
        except BaseException:
            with self._lock:
                self._metrics.pop(name, None)
            raise
        return metric

    def __repr__(self) -> str:
        return f"MetricGroup({DELIMITER.join(self._scope)!r})"


def root_group(registry: MetricRegistry, host: str, tm_id: str) -> MetricGroup:
    """Flink's TaskManager scope, `<host>.taskmanager.<tm_id>`, logical scope `taskmanager`."""
    return MetricGroup(registry, (host, "taskmanager", tm_id), ("taskmanager",), {"<host>": host, "<tm_id>": tm_id})
