"""Prometheus exposition, named as Flink's PrometheusReporter names things.

A metric `queueDepth` in group `<host>.taskmanager.<tm_id>.gpuSidecar` becomes

    flink_taskmanager_gpuSidecar_queueDepth{host="h1",tm_id="tm1"} 3.0

i.e. `flink_` + logical scope ('.' -> '_') + '_' + name, with every character
outside [a-zA-Z0-9_:] replaced by '_', and the group's variables as labels.
Counters and gauges are Prometheus gauges (Flink counters may go down), meters
a gauge of their rate, histograms summaries with quantiles, `_count`, `_sum`.
Metrics that differ only in labels (one per instance) share one family.

Values are read at scrape time by a custom collector in the reporter's own
CollectorRegistry, so nothing is copied between scrapes and the process-wide
prometheus_client registry stays untouched.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
from collections.abc import Iterable, Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric as PromFamily

from sidecar.logs import event
from sidecar.metrics.registry import MetricValue, TrackedMetrics, read_value
from sidecar.metrics.reporters.tracking import TrackingReporter
from sidecar.metrics.types import QUANTILES

log = logging.getLogger(__name__)

_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
PREFIX = "flink_"


def prometheus_name(logical_scope: str, name: str) -> str:
    return PREFIX + _INVALID.sub("_", logical_scope.replace(".", "_") + "_" + name)


def label_name(variable: str) -> str:
    return _INVALID.sub("_", variable)


class PrometheusReporter(TrackingReporter):
    def __init__(self, port: int = 9249, host: str = "0.0.0.0") -> None:
        self._requested_port = port
        self._host = host
        super().__init__()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(self._tracked))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when asked for port 0); the requested one before open()."""
        return self._server.server_port if self._server is not None else self._requested_port

    def open(self, config: Mapping[str, str]) -> None:
        self._server, self._thread = start_http_server(self._requested_port, addr=self._host, registry=self._registry)
        event(log, "prometheus reporter listening", host=self._host, port=self.port)

    def close(self) -> None:
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            # serve_forever looks at shutdown() only between polls, every 0.5 s;
            # a connection wakes it at once (and the handler ignores it).
            stopper = threading.Thread(target=server.shutdown, daemon=True)
            stopper.start()
            while stopper.is_alive():
                _wake(server)
                stopper.join(0.05)
            server.server_close()  # releases the port
        if thread is not None:
            thread.join(timeout=5.0)


def _wake(server: WSGIServer) -> None:
    host, port = server.server_address[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(str(host), str(host))
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        pass


class _Collector:
    def __init__(self, tracked: TrackedMetrics) -> None:
        self._tracked = tracked

    def collect(self) -> Iterable[PromFamily]:
        families: dict[str, PromFamily] = {}
        seen: set[tuple[str, frozenset[tuple[str, str]]]] = set()
        for v in map(read_value, self._tracked.all()):
            if v is None:  # a gauge that is not a number
                continue
            name = prometheus_name(v.logical_scope, v.name)
            typ = "summary" if v.kind == "histogram" else "gauge"
            family = families.get(name)
            if family is None:
                family = families[name] = PromFamily(name, f"{v.name} (scope: {v.logical_scope})", typ)
            labels = {label_name(k): value for k, value in v.variables.items()}
            series = (name, frozenset(labels.items()))
            if family.type != typ or series in seen:
                # Two metrics that collapse to one series: exposing both would make
                # the whole scrape invalid, so the first one wins.
                event(log, "prometheus series clash", logging.DEBUG, identifier=v.identifier, name=name)
                continue
            seen.add(series)
            _add_samples(family, labels, v)
        return list(families.values())


def _add_samples(family: PromFamily, labels: dict[str, str], v: MetricValue) -> None:
    match v.kind:
        case "counter":
            family.add_sample(family.name, labels, float(v.count))
        case "gauge":
            family.add_sample(family.name, labels, v.value)
        case "meter":
            family.add_sample(family.name, labels, v.rate)
        case "histogram":
            for q in QUANTILES:
                family.add_sample(family.name, {**labels, "quantile": str(q)}, v.quantiles[q])
            family.add_sample(family.name + "_count", labels, float(v.count))
            family.add_sample(family.name + "_sum", labels, v.sum)
